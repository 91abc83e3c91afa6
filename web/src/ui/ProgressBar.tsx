/** A labelled meter (usage of a limit): role="progressbar" with the value in words. */
export function ProgressBar({ label, value, max, valueText, tone }: { label: string; value: number; max: number; valueText?: string; tone?: "gold" | "pink" | "cyan" | "danger" }) {
  const pct = max > 0 ? Math.min(100, Math.max(0, (value / max) * 100)) : 0;
  const color = tone ?? (pct >= 100 ? "danger" : pct >= 80 ? "pink" : "gold");
  return (
    <div
      class={`progress progress--${color}`}
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={max > 0 ? max : 100}
      aria-valuenow={max > 0 ? Math.min(value, max) : 0}
      aria-valuetext={valueText}
    >
      <div class="progress__fill" style={{ width: `${pct}%` }} />
    </div>
  );
}
