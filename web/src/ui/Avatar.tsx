import { useState } from "preact/hooks";

export interface AvatarProps {
  name: string;
  /** An image URL (a signed thumbnail_url from a profile's avatar); falls back to initials. */
  src?: string | null;
  size?: "sm" | "md" | "lg" | "xl";
  /** Presence dot. */
  status?: "online" | "offline" | null;
  /** Decorative next to a visible name: hide from screen readers. */
  decorative?: boolean;
}

const COLORS = ["gold", "pink", "cyan"] as const;

export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0]![0]! + parts[parts.length - 1]![0]! : (parts[0] ?? "?").slice(0, 2);
  return letters.toUpperCase();
}

export function Avatar({ name, src, size = "md", status, decorative }: AvatarProps) {
  const [broken, setBroken] = useState(false);
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.charCodeAt(0)) | 0;
  const color = COLORS[Math.abs(hash) % COLORS.length];
  const a11y = decorative ? { "aria-hidden": true as const } : { role: "img" as const, "aria-label": name };
  return (
    <span class={`avatar avatar--${size} avatar--${color}`} {...a11y}>
      {src && !broken ? <img src={src} alt="" loading="lazy" decoding="async" onError={() => setBroken(true)} /> : <span aria-hidden="true">{initials(name)}</span>}
      {status && <span class={`avatar__status avatar__status--${status}`} aria-hidden="true" />}
    </span>
  );
}
