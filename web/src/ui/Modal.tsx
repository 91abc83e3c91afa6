import type { ComponentChildren } from "preact";
import { useEffect, useId, useRef } from "preact/hooks";

export interface ModalProps {
  open: boolean;
  /** Esc, the close button and a click on the backdrop call it. */
  onClose: () => void;
  title: string;
  children?: ComponentChildren;
  footer?: ComponentChildren;
  /** "alertdialog" for confirmations and incoming calls. */
  role?: "dialog" | "alertdialog";
  accent?: "gold" | "pink" | "cyan";
  /** Hide the × button (e.g. an incoming call that must be answered or declined). */
  hideClose?: boolean;
}

/**
 * A modal on the native <dialog> (showModal: focus is trapped, the rest is inert, Esc closes);
 * focus returns to where it was when it closes.
 */
export function Modal({ open, onClose, title, children, footer, role = "dialog", accent = "gold", hideClose }: ModalProps) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const opener = useRef<Element | null>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) {
      opener.current = document.activeElement;
      dialog.showModal();
    } else if (!open && dialog.open) {
      dialog.close();
      (opener.current as HTMLElement | null)?.focus?.();
    }
  }, [open]);
  useEffect(
    () => () => {
      if (ref.current?.open) ref.current.close();
    },
    [],
  );
  return (
    <dialog
      ref={ref}
      class={`modal modal--${accent}`}
      role={role === "alertdialog" ? "alertdialog" : undefined}
      aria-labelledby={titleId}
      onCancel={(event) => {
        event.preventDefault();
        onClose();
      }}
      onClick={(event) => {
        if (event.target === ref.current) onClose();
      }}
    >
      {open && (
        <div class="modal__box">
          <header class="modal__header">
            <h2 id={titleId} class="modal__title">
              {title}
            </h2>
            {!hideClose && (
              <button type="button" class="modal__close" aria-label="Close" onClick={onClose}>
                <span aria-hidden="true">×</span>
              </button>
            )}
          </header>
          <div class="modal__body">{children}</div>
          {footer && <footer class="modal__footer">{footer}</footer>}
        </div>
      )}
    </dialog>
  );
}
