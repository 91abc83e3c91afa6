import { useEffect, useRef, useState } from "preact/hooks";

/**
 * The custom cursor: a white cross and an inverting circle (mix-blend-mode: difference), only on
 * fine pointers that hover (never on touch); the circle grows over interactive elements. The
 * system cursor comes back over text fields. Under reduced motion the circle does not animate.
 */
export function Cursor() {
  const [enabled, setEnabled] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const query = matchMedia("(pointer: fine) and (hover: hover)");
    const update = () => setEnabled(query.matches);
    update();
    query.addEventListener("change", update);
    return () => query.removeEventListener("change", update);
  }, []);
  useEffect(() => {
    if (!enabled) return;
    document.documentElement.classList.add("custom-cursor");
    let frame = 0;
    let x = -100;
    let y = -100;
    const paint = () => {
      frame = 0;
      if (ref.current) ref.current.style.transform = `translate3d(${x}px, ${y}px, 0)`;
    };
    const move = (event: PointerEvent) => {
      if (event.pointerType !== "mouse" && event.pointerType !== "pen") return;
      x = event.clientX;
      y = event.clientY;
      const target = event.target as Element | null;
      const el = ref.current;
      if (el) {
        el.classList.toggle("cursor--active", !!target?.closest?.("a, button, [role=button], [role=tab], [role=switch], select, label, summary"));
        el.classList.toggle("cursor--hidden", !!target?.closest?.("input, textarea, [contenteditable=true]"));
        el.classList.remove("cursor--gone");
      }
      if (!frame) frame = requestAnimationFrame(paint);
    };
    const leave = () => ref.current?.classList.add("cursor--hidden");
    window.addEventListener("pointermove", move, { passive: true });
    document.addEventListener("pointerleave", leave);
    return () => {
      document.documentElement.classList.remove("custom-cursor");
      window.removeEventListener("pointermove", move);
      document.removeEventListener("pointerleave", leave);
      if (frame) cancelAnimationFrame(frame);
    };
  }, [enabled]);
  if (!enabled) return null;
  return (
    <div ref={ref} class="cursor cursor--hidden" aria-hidden="true">
      <span class="cursor__circle" />
      <span class="cursor__cross" />
    </div>
  );
}
