/**
 * A small inline-SVG icon set (no icon font, no glyphs that a system font may lack). Icons are
 * decorative (aria-hidden): the button around them carries the accessible name.
 */
const PATHS = {
  copy: "M9 9h11v11H9zM5 15H4V4h11v1",
  edit: "M4 20h4L19 9l-4-4L4 16zM14 6l4 4",
  trash: "M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6",
  close: "M5 5l14 14M19 5L5 19",
  refresh: "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7",
  left: "M15 5l-7 7 7 7",
  right: "M9 5l7 7-7 7",
  stop: "M6 6h12v12H6z",
  send: "M4 12l16-8-6 16-2-7z",
  plus: "M12 4v16M4 12h16",
  search: "M10 17a7 7 0 1 1 0-14 7 7 0 0 1 0 14zM15 15l6 6",
  check: "M4 12l5 5L20 6",
  bell: "M6 16V11a6 6 0 0 1 12 0v5l2 2H4zM10 20h4",
  upload: "M12 16V4M6 10l6-6 6 6M4 20h16",
} as const;

export type IconName = keyof typeof PATHS;

export function Icon({ name, size = 20 }: { name: IconName; size?: number }) {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.5" stroke-linecap="square" stroke-linejoin="miter" aria-hidden="true" focusable="false">
      <path d={PATHS[name]} />
    </svg>
  );
}
