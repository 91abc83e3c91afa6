import { useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { Link, navigate } from "../../lib/router";
import { signIn, signUp, isKintsugiError } from "../../lib/session";
import { describeError } from "../../lib/errors";
import { Button, Card, GlitchText, Input, Marquee } from "../../ui";
import "./auth.css";

/** /login and /signup. After success the shell redirects to ?next= (or /chat). */
export default function Auth({ path, query }: RouteProps) {
  const mode = path === "/signup" ? "signup" : "login";
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fields, setFields] = useState<Record<string, string>>({});
  const next = query.get("next");
  const suffix = next ? `?next=${encodeURIComponent(next)}` : "";

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setFields({});
    try {
      if (mode === "signup") await signUp(email.trim(), password, name.trim());
      else await signIn(email.trim(), password);
      // The shell sees the session and redirects (guest route → next or /chat).
    } catch (caught) {
      if (isKintsugiError(caught) && caught.fields) setFields(caught.fields);
      setError(describeError(caught).message);
    } finally {
      setBusy(false);
    }
  };

  const title = mode === "signup" ? "Create account" : "Log in";
  return (
    <div class="auth">
      <div class="auth__hero" aria-hidden="true">
        <Marquee items={["Kintsugi", "Golden repairs", "One socket", "Real time"]} tilted jitter tone="pink" height="100%" />
      </div>
      <section class="auth__panel" aria-labelledby="auth-title">
        <p class="auth__kicker caps">
          <span class="blink" aria-hidden="true">
            ▮
          </span>{" "}
          Kintsugi RT
        </p>
        <h1 id="auth-title" class="auth__title">
          <GlitchText text={title} />
        </h1>
        <Card accent={mode === "signup" ? "pink" : "gold"} as="div">
          <form class="stack" onSubmit={submit} noValidate={false}>
            {mode === "signup" && (
              <Input
                label="Display name"
                name="display_name"
                autoComplete="name"
                required
                maxLength={64}
                value={name}
                onInput={(e) => setName(e.currentTarget.value)}
                error={fields.display_name ?? null}
              />
            )}
            <Input
              label="Email"
              type="email"
              name="email"
              autoComplete={mode === "signup" ? "email" : "username"}
              inputMode="email"
              required
              value={email}
              onInput={(e) => setEmail(e.currentTarget.value)}
              error={fields.email ?? null}
            />
            <Input
              label="Password"
              type="password"
              name="password"
              autoComplete={mode === "signup" ? "new-password" : "current-password"}
              required
              minLength={mode === "signup" ? 8 : undefined}
              value={password}
              onInput={(e) => setPassword(e.currentTarget.value)}
              hint={mode === "signup" ? "At least 8 characters." : undefined}
              error={fields.password ?? null}
            />
            {error && (
              <p class="auth__error" role="alert">
                {error}
              </p>
            )}
            <Button type="submit" size="lg" block loading={busy}>
              {mode === "signup" ? "Sign up" : "Log in"}
            </Button>
          </form>
        </Card>
        <p class="auth__switch">
          {mode === "signup" ? (
            <>
              Have an account? <Link href={`/login${suffix}`}>Log in</Link>
            </>
          ) : (
            <>
              New here? <Link href={`/signup${suffix}`}>Create an account</Link>
            </>
          )}
        </p>
        <p class="auth__switch">
          <a
            href="/pricing"
            onClick={(e) => {
              e.preventDefault();
              navigate("/pricing");
            }}
          >
            See plans and pricing
          </a>
        </p>
      </section>
    </div>
  );
}
