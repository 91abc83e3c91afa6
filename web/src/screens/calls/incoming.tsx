/**
 * The call layer, mounted by the shell at all times while signed in: the incoming-call modal
 * (ring tone, accept / decline) and the screen of the call in progress (./CallScreen). It owns the
 * session's `CallManager` (./manager), which the messenger's call buttons and /calls use too.
 */
import type { CallInfo, Conversation } from "@kintsugi/rt-client";
import { useEffect, useState } from "preact/hooks";
import { useClient, useMe } from "../../lib/session";
import { Avatar, Button, Modal, toast } from "../../ui";
import { messengerFor } from "../messenger/model";
import { conversationTitle, useSelect } from "../messenger/util";
import { CallScreen } from "./CallScreen";
import { callsFor } from "./manager";
import "./calls.css";

/** A conversation by id (from the messenger's list, else fetched once). */
function useConversation(id: string | null | undefined): Conversation | null {
  const client = useClient();
  const model = messengerFor(client);
  const conv = useSelect(model.store, (s) => (id ? s.conversations[id] : undefined));
  useEffect(() => {
    if (id && !conv) void model.fetchConversation(id);
  }, [id, !!conv]);
  return conv ?? null;
}

export default function CallLayer() {
  const client = useClient();
  const manager = callsFor(client);
  const ringing = useSelect(manager.store, (s) => s.ringing);
  const active = useSelect(manager.store, (s) => s.active);
  const me = useMe()?.user_id ?? client.hello?.user_id ?? null;
  const incoming = ringing[ringing.length - 1] ?? null;
  const activeConv = useConversation(active?.call.conversation_id);

  // Unlock WebAudio on the first user gesture, so a later ring can sound.
  useEffect(() => {
    const unlock = () => manager.unlockAudio();
    window.addEventListener("pointerdown", unlock, { once: true });
    window.addEventListener("keydown", unlock, { once: true });
    return () => {
      window.removeEventListener("pointerdown", unlock);
      window.removeEventListener("keydown", unlock);
    };
  }, [manager]);

  // Leaving the page while in a call: hang up (the server would wait CALL_REJOIN_GRACE otherwise).
  useEffect(() => {
    const bye = () => {
      if (manager.active && manager.active.phase !== "ended") void manager.hangup();
    };
    window.addEventListener("pagehide", bye);
    return () => window.removeEventListener("pagehide", bye);
  }, [manager]);

  return (
    <>
      {active && <CallScreen manager={manager} active={active} conv={activeConv} me={me} />}
      {incoming && <IncomingModal key={incoming.id} call={incoming} me={me} />}
    </>
  );
}

function IncomingModal({ call, me }: { call: CallInfo; me: string | null }) {
  const client = useClient();
  const manager = callsFor(client);
  const conv = useConversation(call.conversation_id);
  const [busy, setBusy] = useState<"accept" | "decline" | null>(null);
  const caller = conv?.members.find((m) => m.user_id === call.caller_id)?.display_name ?? "Someone";
  const group = conv?.kind === "group";
  const media = call.media === "video" ? "video" : "audio";
  const title = `Incoming ${media} call`;

  const accept = async () => {
    setBusy("accept");
    manager.unlockAudio();
    try {
      await manager.accept(call.id);
    } catch (e) {
      toast.error(e);
      setBusy(null);
    }
  };
  const decline = async () => {
    setBusy("decline");
    await manager.decline(call.id);
  };

  return (
    <Modal open onClose={() => manager.silence()} title={title} role="alertdialog" accent="pink" hideClose>
      <div class="call-incoming" data-testid="incoming-call" data-call-id={call.id}>
        <div class="call-incoming__ring" aria-hidden="true">
          <Avatar name={caller} size="xl" decorative />
        </div>
        <p class="call-incoming__who">
          <strong>{caller}</strong> is calling{group && conv ? ` in ${conversationTitle(conv, me)}` : ""}.
        </p>
        <p class="call-incoming__what dim">{media === "video" ? "Video call: your camera turns on when you accept." : "Audio call."}</p>
        <div class="call-incoming__buttons">
          <Button variant="danger" size="lg" onClick={() => void decline()} loading={busy === "decline"} disabled={!!busy} aria-label="Decline call">
            ✕ Decline
          </Button>
          <Button variant="cyan" size="lg" onClick={() => void accept()} loading={busy === "accept"} disabled={!!busy} aria-label="Accept call">
            ✆ Accept
          </Button>
        </div>
      </div>
    </Modal>
  );
}
