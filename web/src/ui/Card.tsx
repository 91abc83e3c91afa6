import type { ComponentChildren, HTMLAttributes } from "preact";

export type CardProps = Omit<HTMLAttributes<HTMLElement>, "title" | "ref"> & {
  title?: ComponentChildren;
  /** Shadow colour. */
  accent?: "gold" | "pink" | "cyan" | "none";
  /** Element: section (default, with aria-labelledby when titled), article or div. */
  as?: "section" | "article" | "div";
  actions?: ComponentChildren;
  children?: ComponentChildren;
  titleId?: string;
};

export function Card({ title, accent = "gold", as = "section", actions, children, class: cls, titleId, ...rest }: CardProps) {
  const Tag = as as "div";
  const headingId = titleId ?? (title && typeof title === "string" ? `card-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}` : undefined);
  return (
    <Tag class={`card card--${accent} ${cls ?? ""}`} aria-labelledby={title && as !== "div" ? headingId : undefined} {...rest}>
      {(title || actions) && (
        <header class="card__header">
          {title && (
            <h2 class="card__title" id={headingId}>
              {title}
            </h2>
          )}
          {actions && <div class="card__actions">{actions}</div>}
        </header>
      )}
      {children}
    </Tag>
  );
}

export function Badge({ tone = "gold", children, class: cls, ...rest }: HTMLAttributes<HTMLSpanElement> & { tone?: "gold" | "pink" | "cyan" | "muted" | "danger" | "ok"; children?: ComponentChildren }) {
  return (
    <span class={`badge badge--${tone} ${cls ?? ""}`} {...rest}>
      {children}
    </span>
  );
}

export function Spinner({ size = "md", label = "Loading" }: { size?: "sm" | "md" | "lg"; label?: string }) {
  return (
    <span class={`spinner spinner--${size}`} role={label ? "status" : undefined} aria-hidden={label ? undefined : true}>
      <span class="spinner__box" aria-hidden="true" />
      {label && <span class="sr-only">{label}</span>}
    </span>
  );
}

export function EmptyState({ title, icon, children, action }: { title: string; icon?: ComponentChildren; children?: ComponentChildren; action?: ComponentChildren }) {
  return (
    <div class="empty">
      {icon && (
        <div class="empty__icon" aria-hidden="true">
          {icon}
        </div>
      )}
      <h2 class="empty__title">{title}</h2>
      {children && <div class="empty__body">{children}</div>}
      {action && <div class="empty__action">{action}</div>}
    </div>
  );
}
