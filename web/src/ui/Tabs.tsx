import type { ComponentChildren } from "preact";
import { useId, useRef } from "preact/hooks";

export interface TabItem {
  id: string;
  label: ComponentChildren;
  disabled?: boolean;
}

export interface TabsProps {
  tabs: TabItem[];
  value: string;
  onChange: (id: string) => void;
  /** The tablist's accessible name. */
  label: string;
  /** The active panel's content (rendered in a tabpanel). */
  children?: ComponentChildren;
}

/** WAI-ARIA tabs: arrow keys / Home / End move between tabs; the panel is labelled by its tab. */
export function Tabs({ tabs, value, onChange, label, children }: TabsProps) {
  const base = useId();
  const list = useRef<HTMLDivElement>(null);
  const enabled = tabs.filter((t) => !t.disabled);
  const move = (delta: number | "first" | "last") => {
    const index = enabled.findIndex((t) => t.id === value);
    const next = delta === "first" ? enabled[0] : delta === "last" ? enabled[enabled.length - 1] : enabled[(index + delta + enabled.length) % enabled.length];
    if (!next) return;
    onChange(next.id);
    list.current?.querySelector<HTMLElement>(`#${CSS.escape(`${base}-tab-${next.id}`)}`)?.focus();
  };
  return (
    <div class="tabs">
      <div
        ref={list}
        role="tablist"
        aria-label={label}
        class="tabs__list"
        onKeyDown={(event) => {
          const keys: Record<string, number | "first" | "last"> = { ArrowRight: 1, ArrowLeft: -1, Home: "first", End: "last" };
          const delta = keys[event.key];
          if (delta === undefined) return;
          event.preventDefault();
          move(delta);
        }}
      >
        {tabs.map((tab) => (
          <button
            key={tab.id}
            id={`${base}-tab-${tab.id}`}
            type="button"
            role="tab"
            class="tabs__tab"
            aria-selected={tab.id === value}
            aria-controls={`${base}-panel`}
            tabIndex={tab.id === value ? 0 : -1}
            disabled={tab.disabled}
            onClick={() => onChange(tab.id)}
          >
            {tab.label}
          </button>
        ))}
      </div>
      {children !== undefined && (
        <div id={`${base}-panel`} role="tabpanel" aria-labelledby={`${base}-tab-${value}`} class="tabs__panel" tabIndex={0}>
          {children}
        </div>
      )}
    </div>
  );
}
