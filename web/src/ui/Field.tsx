import type { ComponentChildren, LooseInputHTMLAttributes, LooseSelectHTMLAttributes, TextareaHTMLAttributes } from "preact";
import { useEffect, useId, useRef } from "preact/hooks";

interface FieldShell {
  /** The visible label (required: every input has one). */
  label: string;
  /** Hide the label visually (still read by screen readers). */
  hideLabel?: boolean;
  hint?: ComponentChildren;
  error?: string | null;
}

function Shell({ id, label, hideLabel, hint, error, children }: FieldShell & { id: string; children: ComponentChildren }) {
  return (
    <div class={`field ${error ? "field--error" : ""}`}>
      <label for={id} class={`field__label ${hideLabel ? "sr-only" : ""}`}>
        {label}
      </label>
      {children}
      {hint && !error && (
        <p id={`${id}-hint`} class="field__hint">
          {hint}
        </p>
      )}
      {error && (
        <p id={`${id}-error`} class="field__error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

function describedBy(id: string, hint: unknown, error: unknown): string | undefined {
  if (error) return `${id}-error`;
  if (hint) return `${id}-hint`;
  return undefined;
}

export type InputProps = Omit<LooseInputHTMLAttributes<HTMLInputElement>, "label" | "role"> & FieldShell & { inputRef?: { current: HTMLInputElement | null } };

export function Input({ label, hideLabel, hint, error, id, inputRef, class: cls, ...rest }: InputProps) {
  const auto = useId();
  const fieldId = (id as string | undefined) ?? auto;
  return (
    <Shell id={fieldId} label={label} hideLabel={hideLabel} hint={hint} error={error}>
      <input
        id={fieldId}
        ref={inputRef}
        class={`input ${cls ?? ""}`}
        aria-invalid={error ? true : undefined}
        aria-describedby={describedBy(fieldId, hint, error)}
        {...(rest as {})}
      />
    </Shell>
  );
}

export type TextAreaProps = Omit<TextareaHTMLAttributes<HTMLTextAreaElement>, "label"> &
  FieldShell & {
    /** Grow with the content up to `maxRows`. */
    autoGrow?: boolean;
    maxRows?: number;
    textareaRef?: { current: HTMLTextAreaElement | null };
  };

export function TextArea({ label, hideLabel, hint, error, id, autoGrow, maxRows = 10, textareaRef, class: cls, value, ...rest }: TextAreaProps) {
  const auto = useId();
  const fieldId = (id as string | undefined) ?? auto;
  const own = useRef<HTMLTextAreaElement | null>(null);
  useEffect(() => {
    const el = own.current;
    if (!autoGrow || !el) return;
    el.style.height = "auto";
    const line = parseFloat(getComputedStyle(el).lineHeight) || 24;
    el.style.height = `${Math.min(el.scrollHeight + 6, line * maxRows + 24)}px`;
  }, [value, autoGrow, maxRows]);
  return (
    <Shell id={fieldId} label={label} hideLabel={hideLabel} hint={hint} error={error}>
      <textarea
        id={fieldId}
        ref={(el) => {
          own.current = el;
          if (textareaRef) textareaRef.current = el;
        }}
        class={`input textarea ${cls ?? ""}`}
        value={value}
        aria-invalid={error ? true : undefined}
        aria-describedby={describedBy(fieldId, hint, error)}
        {...rest}
      />
    </Shell>
  );
}

export interface SelectOption {
  value: string;
  label: string;
  disabled?: boolean;
}

export type SelectProps = Omit<LooseSelectHTMLAttributes<HTMLSelectElement>, "label" | "role"> & FieldShell & { options: SelectOption[] };

export function Select({ label, hideLabel, hint, error, id, options, class: cls, ...rest }: SelectProps) {
  const auto = useId();
  const fieldId = (id as string | undefined) ?? auto;
  return (
    <Shell id={fieldId} label={label} hideLabel={hideLabel} hint={hint} error={error}>
      <select id={fieldId} class={`input select ${cls ?? ""}`} aria-invalid={error ? true : undefined} aria-describedby={describedBy(fieldId, hint, error)} {...(rest as {})}>
        {options.map((o) => (
          <option key={o.value} value={o.value} disabled={o.disabled}>
            {o.label}
          </option>
        ))}
      </select>
    </Shell>
  );
}

export type SwitchProps = {
  label: string;
  checked: boolean;
  onChange: (checked: boolean) => void;
  disabled?: boolean;
  hint?: ComponentChildren;
  busy?: boolean;
};

/** An on/off toggle: role="switch", name = its label (getByRole("switch", {name})). */
export function Switch({ label, checked, onChange, disabled, hint, busy }: SwitchProps) {
  const id = useId();
  return (
    <div class="switch-field">
      <button
        id={id}
        type="button"
        role="switch"
        aria-checked={checked}
        aria-busy={busy || undefined}
        aria-describedby={hint ? `${id}-hint` : undefined}
        class={`switch ${checked ? "switch--on" : ""}`}
        disabled={disabled || busy}
        onClick={() => onChange(!checked)}
      >
        <span class="switch__track" aria-hidden="true">
          <span class="switch__thumb" />
        </span>
        <span class="switch__label">{label}</span>
      </button>
      {hint && (
        <p id={`${id}-hint`} class="field__hint">
          {hint}
        </p>
      )}
    </div>
  );
}
