/** The design system (web/CONVENTIONS.md § UI). Import from "../../ui". */
export { Button, IconButton, type ButtonProps, type ButtonVariant, type IconButtonProps } from "./Button";
export { Input, TextArea, Select, Switch, type InputProps, type TextAreaProps, type SelectProps, type SelectOption, type SwitchProps } from "./Field";
export { Card, Badge, Spinner, EmptyState, type CardProps } from "./Card";
export { Modal, type ModalProps } from "./Modal";
export { Tabs, type TabItem, type TabsProps } from "./Tabs";
export { Avatar, initials, type AvatarProps } from "./Avatar";
export { toast, dismissToast, Toaster, type ToastOptions, type ToastTone } from "./Toast";
export { Marquee, type MarqueeProps } from "./Marquee";
export { GlitchText, type GlitchTextProps } from "./GlitchText";
export { Cursor } from "./Cursor";
export { ProgressBar } from "./ProgressBar";
export { Icon, type IconName } from "./Icon";
