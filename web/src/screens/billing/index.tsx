/**
 * Pricing and billing: the plans (GET /api/billing/plans, public), the user's subscription, Stripe
 * Checkout and the Customer Portal (POST /api/billing/checkout | portal → redirect to Stripe).
 * When billing is off the buttons are disabled and the server's reason is shown.
 * Also the Stripe return URLs: /billing/success, /billing/cancel, /settings/billing.
 */
import { useEffect, useState } from "preact/hooks";
import type { RouteProps } from "../../routes";
import { Link, navigate } from "../../lib/router";
import { apiJson, publicJson, useAuth, useEvent } from "../../lib/session";
import { useUsage } from "../../lib/usage";
import { describeError, formatBytes, tierLabel } from "../../lib/errors";
import { formatDuration, formatMoney, formatNumber } from "../../lib/format";
import { Badge, Button, Card, Spinner, toast } from "../../ui";
import "./billing.css";

interface PlanPrice {
  id: string;
  currency: string;
  unit_amount: number | null;
  interval: string | null;
  interval_count: number | null;
}
interface Plan {
  tier: string;
  paid: boolean;
  purchasable: boolean;
  price: PlanPrice | null;
  limits: {
    token_limit: number;
    chat_models: string[];
    media_max_bytes: number;
    call_max_participants: number;
    call_max_duration_seconds: number;
    call_video: boolean;
  };
}
interface Plans {
  billing: "stripe" | "off";
  billing_off_reason: string | null;
  prices_available: boolean;
  window_seconds: number;
  window_reset_at: string;
  tiers: Plan[];
}
interface Subscription {
  tier: string;
  status: string;
  current_period_end: string | null;
  cancel_at_period_end: boolean;
}

const ACCENTS = ["gold", "cyan", "pink", "gold", "cyan"] as const;

function priceText(plan: Plan): string {
  if (!plan.paid) return "Free";
  if (!plan.price || plan.price.unit_amount == null) return "No price";
  const every = plan.price.interval ? ` / ${plan.price.interval_count && plan.price.interval_count > 1 ? `${plan.price.interval_count} ` : ""}${plan.price.interval}` : "";
  return `${formatMoney(plan.price.unit_amount, plan.price.currency)}${every}`;
}

export default function Billing({ path, params }: RouteProps) {
  const auth = useAuth();
  const signedIn = auth.status === "signed-in";
  const usage = useUsage();
  const [plans, setPlans] = useState<Plans | null>(null);
  const [plansError, setPlansError] = useState<string | null>(null);
  const [sub, setSub] = useState<Subscription | null>(null);
  const [pending, setPending] = useState<string | null>(null);
  const [version, setVersion] = useState(0);

  useEffect(() => {
    publicJson<Plans>("/api/billing/plans").then(setPlans, (error) => setPlansError(describeError(error).message));
  }, []);
  useEffect(() => {
    if (!signedIn) return;
    apiJson<Subscription>("GET", "/api/billing/subscription").then(setSub, (error) => {
      // billing_disabled (503) is expected when billing is off: the plans say why.
      if (describeError(error).code !== "billing_disabled") toast.error(error);
    });
  }, [signedIn, version]);
  useEvent("subscription.updated", (e) => {
    setVersion((v) => v + 1);
    if (e.attention === "payment_failed") toast.warning("Your last payment failed. Update your card in the billing portal.", { title: "Payment problem" });
    else if (e.attention === "payment_action_required") toast.warning("Your bank wants you to confirm the payment.", { title: "Action required" });
    else toast.success(`Your plan is now ${tierLabel(e.tier)}.`);
  });

  useEffect(() => {
    if (path === "/billing/success") {
      toast.success("Payment received — your plan updates as soon as Stripe confirms it.", { title: "Thank you" });
      navigate("/pricing", { replace: true });
    } else if (path === "/billing/cancel") {
      toast("Checkout cancelled. Nothing was charged.");
      navigate("/pricing", { replace: true });
    }
  }, [path, params.result]);

  const off = plans?.billing === "off";
  const currentTier = sub?.tier ?? usage?.tier ?? (signedIn ? "basic" : null);
  const subscribed = !!sub && sub.status !== "none" && sub.tier !== "basic";

  const checkout = async (tier: string) => {
    if (!signedIn) {
      navigate(`/signup?next=${encodeURIComponent("/pricing")}`);
      return;
    }
    setPending(tier);
    try {
      const { url } = await apiJson<{ id: string; url: string }>("POST", "/api/billing/checkout", { tier });
      location.assign(url);
    } catch (error) {
      toast.error(error);
      setPending(null);
    }
  };
  const portal = async () => {
    setPending("portal");
    try {
      const { url } = await apiJson<{ url: string }>("POST", "/api/billing/portal");
      location.assign(url);
    } catch (error) {
      toast.error(error);
      setPending(null);
    }
  };

  return (
    <section class="screen" aria-labelledby="billing-title">
      <h1 id="billing-title" class="screen-title">
        Pricing
      </h1>
      <p class="screen-lead">
        Every plan has the same features; paid plans raise the token limit per 6-hour window, unlock bigger models, larger uploads and bigger calls.
      </p>

      {off && (
        <div class="billing-off" role="status">
          <Badge tone="pink">Billing off</Badge>
          <p class="prose">
            Paid plans cannot be bought on this server: {plans?.billing_off_reason ?? "billing is not configured."}
          </p>
        </div>
      )}
      {plans && !off && !plans.prices_available && (
        <p class="billing-off" role="status">
          Prices could not be loaded from Stripe right now; the limits below still hold.
        </p>
      )}

      {signedIn && (
        <Card title="Your plan" accent="cyan" class="billing-current">
          <div class="row">
            <span class="billing-current__tier">{currentTier ? tierLabel(currentTier) : "—"}</span>
            {sub && sub.status !== "none" && <Badge tone={sub.status === "active" || sub.status === "trialing" ? "ok" : "pink"}>{sub.status.replace(/_/g, " ")}</Badge>}
            {sub?.cancel_at_period_end && <Badge tone="muted">Cancels at period end</Badge>}
          </div>
          {sub?.current_period_end && (
            <p class="muted">
              {sub.cancel_at_period_end ? "Ends" : "Renews"} on {new Date(sub.current_period_end).toLocaleDateString()}.
            </p>
          )}
          {usage && (
            <p class="muted">
              {usage.limit < 0 ? "No token limit." : `${formatNumber(usage.used)} of ${formatNumber(usage.limit)} tokens used this window.`} <Link href="/usage">Usage</Link>
            </p>
          )}
          <div class="row">
            <Button variant="secondary" onClick={portal} loading={pending === "portal"} disabled={off || !subscribed} aria-describedby="portal-why">
              Manage billing
            </Button>
            <span id="portal-why" class="muted billing-why">
              {off ? "Billing is off on this server." : !subscribed ? "Available once you have a subscription." : "Change plan, card or cancel in Stripe's portal."}
            </span>
          </div>
        </Card>
      )}

      {plansError && (
        <p role="alert" class="billing-off">
          Could not load the plans: {plansError}
        </p>
      )}
      {!plans && !plansError && (
        <div class="page-loading">
          <Spinner size="lg" label="Loading plans" />
        </div>
      )}
      {plans && (
        <ul class="plans" aria-label="Plans">
          {plans.tiers.map((plan, i) => {
            const current = plan.tier === currentTier;
            const reason = off
              ? "Billing is off on this server"
              : !plan.paid
                ? "Free for everyone"
                : !plan.purchasable
                  ? "Not for sale here (no price configured)"
                  : subscribed
                    ? "Switch plans in the billing portal"
                    : null;
            return (
              <li key={plan.tier} class={`plan card card--${ACCENTS[i % ACCENTS.length]} ${current ? "plan--current" : ""}`}>
                <h2 class="plan__name">{tierLabel(plan.tier)}</h2>
                {current && <Badge tone="gold">Your plan</Badge>}
                <p class="plan__price">{priceText(plan)}</p>
                <ul class="plan__limits">
                  <li>
                    <strong>{plan.limits.token_limit < 0 ? "Unlimited" : formatNumber(plan.limits.token_limit)}</strong> tokens / {formatDuration(plans.window_seconds * 1000).replace(" 00 min", "")}
                  </li>
                  <li>Models: {plan.limits.chat_models.join(", ") || "—"}</li>
                  <li>Uploads up to {formatBytes(plan.limits.media_max_bytes)}</li>
                  <li>
                    Calls: {plan.limits.call_max_participants} people, {formatDuration(plan.limits.call_max_duration_seconds * 1000).replace(" 00 min", "")}
                    {plan.limits.call_video ? ", video" : ", audio only"}
                  </li>
                </ul>
                {plan.paid && (
                  <Button
                    block
                    variant={current ? "secondary" : "primary"}
                    disabled={!!reason || current}
                    loading={pending === plan.tier}
                    onClick={() => checkout(plan.tier)}
                    aria-label={`Subscribe to ${tierLabel(plan.tier)}`}
                    aria-describedby={reason ? `why-${plan.tier}` : undefined}
                  >
                    {current ? "Current plan" : signedIn ? "Subscribe" : "Sign up to subscribe"}
                  </Button>
                )}
                {reason && plan.paid && (
                  <p id={`why-${plan.tier}`} class="plan__why">
                    {reason}
                  </p>
                )}
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}
