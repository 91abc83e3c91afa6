/** Bits shared by the agents screens. */
import { Link } from "../../lib/router";
import { isKintsugiError } from "../../lib/session";
import { Card } from "../../ui";

export function isTierError(error: unknown): boolean {
  return isKintsugiError(error) && error.code === "tier_required";
}

export function Upsell() {
  return (
    <Card title="Agents need Premium Starter" accent="pink" titleId="agents-upsell-title">
      <p class="prose">
        Build assistants with your own instructions, models and webhook tools (n8n, Make or any signed HTTPS endpoint), then chat with them. Agents are part of
        the Premium Starter plan and above.
      </p>
      <p>
        <Link href="/pricing" class="btn btn--primary btn--md">
          See plans
        </Link>
      </p>
    </Card>
  );
}

export function BackToAgents() {
  return (
    <Link href="/agents" class="agents-back">
      ← All agents
    </Link>
  );
}

