import type { ButtonHTMLAttributes, ComponentChildren } from "preact";
import { Spinner } from "./Card";

export type ButtonVariant = "primary" | "secondary" | "danger" | "ghost" | "pink" | "cyan";

export type ButtonProps = Omit<ButtonHTMLAttributes<HTMLButtonElement>, "type" | "size"> & {
  variant?: ButtonVariant;
  size?: "sm" | "md" | "lg";
  /** Shows a spinner, sets aria-busy and disables the button. */
  loading?: boolean;
  block?: boolean;
  type?: "button" | "submit" | "reset";
  disabled?: boolean;
  children?: ComponentChildren;
};

/** The neo-brutalist button: 3 px border, hard 8 px shadow that collapses on press. */
export function Button({ variant = "primary", size = "md", loading, block, type = "button", disabled, class: cls, className, children, ...rest }: ButtonProps) {
  const classes = ["btn", `btn--${variant}`, `btn--${size}`, block ? "btn--block" : "", cls ?? className ?? ""].filter(Boolean).join(" ");
  return (
    <button type={type} class={classes} disabled={disabled || loading} aria-busy={loading || undefined} {...rest}>
      {loading && <Spinner size="sm" label="" />}
      {children}
    </button>
  );
}

export type IconButtonProps = Omit<ButtonProps, "children"> & {
  /** The accessible name (required: the icon alone says nothing to a screen reader). */
  label: string;
  icon: ComponentChildren;
  /** Also show the label next to the icon. */
  showLabel?: boolean;
  pressed?: boolean;
};

/** A square, ≥ 44 px icon button; `label` is its accessible name and tooltip. */
export function IconButton({ label, icon, showLabel, pressed, variant = "ghost", class: cls, ...rest }: IconButtonProps) {
  return (
    <Button
      variant={variant}
      class={`icon-btn ${showLabel ? "icon-btn--labelled" : ""} ${cls ?? ""}`}
      aria-label={showLabel ? undefined : label}
      title={label}
      aria-pressed={pressed}
      {...rest}
    >
      <span aria-hidden="true" class="icon-btn__icon">
        {icon}
      </span>
      {showLabel && <span>{label}</span>}
    </Button>
  );
}
