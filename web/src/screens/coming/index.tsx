import type { RouteProps } from "../../routes";
import { Badge, Card, GlitchText, Marquee } from "../../ui";

const SLOTS: Record<string, { title: string; lead: string; points: string[]; tier: string }> = {
  "/translator": {
    title: "Translator",
    lead: "Live translation of messages and calls, in the same socket as everything else.",
    points: ["Translate any message in a conversation", "Live captions in calls", "Keeps your tone and formatting"],
    tier: "premium_starter",
  },
  "/agents": {
    title: "Agent builder",
    lead: "Build AI agents from your own prompts and tools, and run them in chats.",
    points: ["System prompt, model and tools per agent", "Share agents with your groups", "Usage counted in your token window"],
    tier: "premium_starter",
  },
};

/** The "coming" slots: /translator and /agents. */
export default function Coming({ path }: RouteProps) {
  const slot = SLOTS[path] ?? SLOTS["/translator"]!;
  return (
    <section class="screen screen--narrow" aria-labelledby="coming-title">
      <p>
        <Badge tone="pink">Coming soon</Badge>
      </p>
      <h1 id="coming-title" class="screen-title">
        <GlitchText text={slot.title} />
      </h1>
      <p class="screen-lead">{slot.lead}</p>
      <Marquee items={[slot.title, "Coming soon", "Stay tuned"]} tilted jitter height="160px" />
      <Card title="What it will do" accent="cyan">
        <ul class="prose">
          {slot.points.map((p) => (
            <li key={p}>{p}</li>
          ))}
        </ul>
        <p class="muted">Planned for the {slot.tier.replace(/_/g, " ")} plan and above.</p>
      </Card>
    </section>
  );
}
