/**
 * Profile: display name, @handle, avatar (POST /api/media as an image, then profile.update),
 * notifications (Web Push via ../../lib/push, loaded lazily), log out (this device / everywhere).
 */
import type { User } from "@kintsugi/rt-client";
import { useEffect, useRef, useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { apiJson, isKintsugiError, setMe, signOut, uploadMedia, useClient, useMe } from "../../lib/session";
import { describeError, tierLabel } from "../../lib/errors";
import { useUsage } from "../../lib/usage";
import { Avatar, Badge, Button, Card, Input, Spinner, Switch, toast } from "../../ui";
import "./profile.css";

function fieldOf(error: unknown): string | null {
  if (!isKintsugiError(error)) return null;
  const field = (error.details as { field?: string } | null)?.field;
  if (error.code === "handle_taken") return "handle";
  return field ?? (error.fields ? Object.keys(error.fields)[0] ?? null : null);
}

function ProfileForm() {
  const client = useClient();
  const me = useMe();
  const [name, setName] = useState("");
  const [handle, setHandle] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [saving, setSaving] = useState(false);
  const [uploading, setUploading] = useState<number | null>(null);
  const file = useRef<HTMLInputElement>(null);
  const loadedFor = useRef<string | null>(null);

  useEffect(() => {
    if (me && loadedFor.current !== me.user_id) {
      loadedFor.current = me.user_id;
      setName(me.display_name);
      setHandle(me.handle ?? "");
    }
  }, [me]);

  if (!me) return <Spinner size="lg" label="Loading profile" />;

  const save = async (event: Event) => {
    event.preventDefault();
    setSaving(true);
    setErrors({});
    try {
      const cleanHandle = handle.trim().replace(/^@/, "");
      const { profile } = await client.request("profile.update", {
        display_name: name.trim(),
        handle: cleanHandle ? cleanHandle : null,
      });
      setMe(profile);
      setName(profile.display_name);
      setHandle(profile.handle ?? "");
      toast.success("Profile saved");
    } catch (error) {
      const field = fieldOf(error);
      const message = describeError(error).message;
      if (field === "handle" || field === "display_name") setErrors({ [field]: isKintsugiError(error) && error.code === "bad_request" ? error.message : message });
      else toast.error(error);
    } finally {
      setSaving(false);
    }
  };

  const upload = async (event: Event) => {
    const input = event.currentTarget as HTMLInputElement;
    const chosen = input.files?.[0];
    input.value = "";
    if (!chosen) return;
    setUploading(0);
    try {
      const media = await uploadMedia(chosen, { kind: "image", onProgress: (f) => setUploading(f) });
      const { profile } = await client.request("profile.update", { avatar_media_id: media.id });
      setMe(profile);
      toast.success("Avatar updated");
    } catch (error) {
      toast.error(error, { title: "Avatar upload failed" });
    } finally {
      setUploading(null);
    }
  };

  const removeAvatar = async () => {
    try {
      const { profile } = await client.request("profile.update", { avatar_media_id: null });
      setMe(profile);
    } catch (error) {
      toast.error(error);
    }
  };

  return (
    <Card title="Profile">
      <div class="profile-avatar">
        <Avatar name={me.display_name} src={me.avatar?.thumbnail_url ?? me.avatar?.url ?? null} size="xl" />
        <div class="stack">
          <input ref={file} id="avatar-file" type="file" accept="image/jpeg,image/png,image/gif,image/webp" class="sr-only" onChange={upload} aria-label="Choose an avatar image" />
          <Button variant="secondary" onClick={() => file.current?.click()} loading={uploading !== null}>
            {uploading !== null ? `Uploading ${Math.round(uploading * 100)}%` : "Upload avatar"}
          </Button>
          {me.avatar && (
            <Button variant="ghost" size="sm" onClick={removeAvatar}>
              Remove avatar
            </Button>
          )}
          <p class="field__hint">JPEG, PNG, GIF or WebP.</p>
        </div>
      </div>
      <form class="stack" onSubmit={save}>
        <Input label="Display name" value={name} required maxLength={64} autoComplete="name" onInput={(e) => setName(e.currentTarget.value)} error={errors.display_name ?? null} />
        <Input
          label="Handle"
          value={handle}
          maxLength={33}
          autoComplete="off"
          autoCapitalize="none"
          spellcheck={false}
          placeholder="@your_handle"
          onInput={(e) => setHandle(e.currentTarget.value)}
          hint="3–32 letters, digits or _, starting with a letter. People can find you by it. Leave empty for none."
          error={errors.handle ?? null}
        />
        <div>
          <Button type="submit" loading={saving}>
            Save profile
          </Button>
        </div>
      </form>
    </Card>
  );
}

type PushState = "unknown" | "unsupported" | "disabled_by_server" | "denied" | "enabled" | "off";

/** The Web Push toggle; ../../lib/push (W3) is loaded only when this card shows. */
function NotificationsCard() {
  const client = useClient();
  const [state, setState] = useState<PushState>("unknown");
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    let alive = true;
    import("../../lib/push")
      .then(async (push) => {
        const status = await push.pushStatus();
        if (!alive) return;
        if (status === "off") {
          // Offer the toggle only when the server sends pushes at all.
          const config = await client.request("push.config").catch(() => null);
          if (alive) setState(config && !config.enabled ? "disabled_by_server" : "off");
        } else setState(status);
      })
      .catch(() => alive && setState("unsupported"));
    return () => {
      alive = false;
    };
  }, [client]);
  const toggle = async (on: boolean) => {
    setBusy(true);
    try {
      const push = await import("../../lib/push");
      if (on) await push.enablePush(client);
      else await push.disablePush(client);
      setState(on ? "enabled" : "off");
      toast.success(on ? "Notifications on" : "Notifications off");
    } catch (error) {
      const code = (error as { code?: string } | null)?.code;
      if (code === "denied" || code === "unsupported" || code === "disabled_by_server") setState(code);
      toast.error(error, { title: "Notifications" });
    } finally {
      setBusy(false);
    }
  };
  const hint =
    state === "unsupported"
      ? "This browser does not support push notifications (on iPhone: add the app to the Home Screen first)."
      : state === "denied"
        ? "Notifications are blocked for this site in the browser's settings."
        : state === "disabled_by_server"
          ? "This server does not send push notifications."
          : "New messages and calls notify you when no tab of the app is open.";
  return (
    <Card title="Notifications" accent="cyan">
      <Switch label="Push notifications" checked={state === "enabled"} disabled={state !== "enabled" && state !== "off"} busy={busy} onChange={toggle} hint={hint} />
    </Card>
  );
}

function AccountCard() {
  const [user, setUser] = useState<User | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const usage = useUsage();
  useEffect(() => {
    apiJson<User>("GET", "/api/auth/me").then(setUser, () => undefined);
  }, []);
  const logoutAll = async () => {
    setBusy("all");
    try {
      await apiJson("POST", "/api/auth/logout-all");
    } catch (error) {
      toast.error(error);
    }
    await signOut();
  };
  return (
    <Card title="Account" accent="pink">
      <dl class="profile-facts">
        <div>
          <dt>Email</dt>
          <dd>{user?.email ?? "…"}</dd>
        </div>
        <div>
          <dt>Plan</dt>
          <dd>
            <Badge tone="cyan">{tierLabel(usage?.tier ?? user?.tier ?? "basic")}</Badge>
          </dd>
        </div>
      </dl>
      <div class="row">
        <Button
          variant="secondary"
          loading={busy === "one"}
          onClick={async () => {
            setBusy("one");
            await signOut();
          }}
        >
          Log out
        </Button>
        <Button variant="danger" loading={busy === "all"} onClick={logoutAll}>
          Log out everywhere
        </Button>
      </div>
    </Card>
  );
}

export default function Profile(_props: RouteProps) {
  return (
    <section class="screen" aria-labelledby="profile-title">
      <h1 id="profile-title" class="screen-title">
        Profile
      </h1>
      <div class="grid profile-grid">
        <ProfileForm />
        <div class="stack profile-side">
          <NotificationsCard />
          <AccountCard />
        </div>
      </div>
    </section>
  );
}
