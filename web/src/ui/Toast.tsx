/**
 * Toasts: `toast("Saved")`, `toast.error(err)` (a KintsugiError → a human message from
 * lib/errors), rendered by <Toaster/> in a polite live region (errors: assertive).
 */
import type { ComponentChildren } from "preact";
import { useEffect } from "preact/hooks";
import { describeError } from "../lib/errors";
import { createStore, useStore } from "../lib/store";

export type ToastTone = "info" | "success" | "warning" | "error";

export interface ToastItem {
  id: number;
  tone: ToastTone;
  title?: string;
  message: ComponentChildren;
  timeoutMs: number;
  action?: { label: string; onClick: () => void };
}

const toasts = createStore<ToastItem[]>([]);
let nextId = 1;

export interface ToastOptions {
  tone?: ToastTone;
  title?: string;
  timeoutMs?: number;
  action?: { label: string; onClick: () => void };
  /** Replace a toast with the same key instead of stacking another. */
  key?: string;
}

const keyed = new Map<string, number>();

export function toast(message: ComponentChildren, options: ToastOptions = {}): number {
  if (options.key && keyed.has(options.key)) dismissToast(keyed.get(options.key)!);
  const id = nextId++;
  if (options.key) keyed.set(options.key, id);
  const item: ToastItem = {
    id,
    tone: options.tone ?? "info",
    message,
    timeoutMs: options.timeoutMs ?? (options.tone === "error" ? 8000 : 5000),
    ...(options.title ? { title: options.title } : {}),
    ...(options.action ? { action: options.action } : {}),
  };
  toasts.set((list) => [...list.slice(-4), item]);
  return id;
}

toast.success = (message: ComponentChildren, options: ToastOptions = {}) => toast(message, { ...options, tone: "success" });
toast.warning = (message: ComponentChildren, options: ToastOptions = {}) => toast(message, { ...options, tone: "warning" });
/** A typed error (KintsugiError or anything thrown) as an error toast. */
toast.error = (error: unknown, options: ToastOptions = {}) => {
  const { title, message } = describeError(error);
  return toast(message, { title, ...options, tone: "error" });
};

export function dismissToast(id: number): void {
  toasts.set((list) => list.filter((t) => t.id !== id));
  for (const [key, value] of keyed) if (value === id) keyed.delete(key);
}

function ToastView({ item }: { item: ToastItem }) {
  useEffect(() => {
    if (item.timeoutMs <= 0) return;
    const timer = setTimeout(() => dismissToast(item.id), item.timeoutMs);
    return () => clearTimeout(timer);
  }, [item.id, item.timeoutMs]);
  return (
    <div class={`toast toast--${item.tone}`}>
      <div class="toast__text">
        {item.title && <strong class="toast__title">{item.title}</strong>}
        <span class="toast__message">{item.message}</span>
      </div>
      {item.action && (
        <button
          type="button"
          class="toast__action"
          onClick={() => {
            item.action!.onClick();
            dismissToast(item.id);
          }}
        >
          {item.action.label}
        </button>
      )}
      <button type="button" class="toast__close" aria-label="Dismiss notification" onClick={() => dismissToast(item.id)}>
        <span aria-hidden="true">×</span>
      </button>
    </div>
  );
}

export function Toaster() {
  const list = useStore(toasts);
  const errors = list.filter((t) => t.tone === "error");
  const others = list.filter((t) => t.tone !== "error");
  return (
    <div class="toaster">
      <div role="status" aria-live="polite" class="toaster__region">
        {others.map((item) => (
          <ToastView key={item.id} item={item} />
        ))}
      </div>
      <div role="alert" aria-live="assertive" class="toaster__region">
        {errors.map((item) => (
          <ToastView key={item.id} item={item} />
        ))}
      </div>
    </div>
  );
}
