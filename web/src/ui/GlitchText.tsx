import type { HTMLAttributes, JSX } from "preact";

export interface GlitchTextProps {
  text: string;
  as?: "span" | "h1" | "h2" | "h3" | "strong" | "p";
  class?: string;
  /** Inside an aria-hidden parent (no duplicate reading concerns). */
  decorative?: boolean;
  id?: string;
}

/**
 * Glitch text: the text once for everyone, plus two aria-hidden colour layers (pink, cyan) that
 * jump now and then. Screen readers read it once; reduced motion hides the layers.
 */
export function GlitchText({ text, as = "span", class: cls, id }: GlitchTextProps) {
  const Tag = as as unknown as (props: HTMLAttributes<HTMLElement>) => JSX.Element;
  return (
    <Tag class={`glitch ${cls ?? ""}`} id={id}>
      {text}
      <span class="glitch__layer glitch__layer--a" aria-hidden="true">
        {text}
      </span>
      <span class="glitch__layer glitch__layer--b" aria-hidden="true">
        {text}
      </span>
    </Tag>
  );
}
