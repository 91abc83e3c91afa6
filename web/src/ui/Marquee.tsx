import type { ComponentChildren } from "preact";
import { GlitchText } from "./GlitchText";

export interface MarqueeProps {
  items: string[];
  tone?: "gold" | "pink" | "cyan";
  /** The −20° banner across its container (decorative; the container clips it). */
  tilted?: boolean;
  /** Seconds per loop (30 by default). */
  duration?: number;
  /** The fast glitch jitter of the original banner. */
  jitter?: boolean;
  /** Height of the tilted banner's box. */
  height?: string;
  children?: ComponentChildren;
}

/**
 * The scrolling ticker (decorative: aria-hidden). Items are repeated twice so the loop is seamless;
 * every third one blinks; under reduced motion it stands still.
 */
export function Marquee({ items, tone = "gold", tilted, duration = 30, jitter, height = "220px" }: MarqueeProps) {
  const row = [...items, ...items, ...items, ...items];
  const band = (
    <div class={`marquee marquee--${tone} ${jitter ? "marquee--jitter" : ""}`} aria-hidden="true" style={{ "--marquee-duration": `${duration}s` }}>
      <div class="marquee__track">
        {[...row, ...row].map((item, i) => (
          <span class="marquee__item" key={i}>
            {i % 5 === 0 ? <GlitchText text={item} decorative /> : item} ✦
          </span>
        ))}
      </div>
    </div>
  );
  if (!tilted) return band;
  return (
    <div class="marquee-tilted" style={{ height }} aria-hidden="true">
      {band}
    </div>
  );
}
