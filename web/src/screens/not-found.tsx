import type { RouteProps } from "../routes";
import { Link } from "../lib/router";
import { GlitchText, Marquee } from "../ui";

export default function NotFound({ path }: RouteProps) {
  return (
    <section class="screen screen--narrow" aria-labelledby="nf-title">
      <h1 id="nf-title" class="screen-title">
        <GlitchText text="404 — Not found" />
      </h1>
      <p class="screen-lead">
        Nothing lives at <code>{path}</code>.
      </p>
      <Marquee items={["Lost", "Signal", "Not found"]} tilted tone="cyan" height="180px" />
      <p>
        <Link href="/" class="btn btn--primary">
          Go home
        </Link>
      </p>
    </section>
  );
}
