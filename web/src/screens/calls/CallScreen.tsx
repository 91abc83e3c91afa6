/** The call in progress: remote video(s), own preview, mute / camera / hang-up; minimisable. */
import type { Conversation } from "@kintsugi/rt-client";
import { useEffect, useRef, useState } from "preact/hooks";
import { Avatar, IconButton } from "../../ui";
import type { ActiveCall, CallManager, RemoteTile } from "./manager";

const REASONS: Record<string, string> = {
  hangup: "Call ended",
  declined: "Declined",
  missed: "No answer",
  busy: "Busy: they are in another call",
  cancelled: "Cancelled",
  failed: "The connection failed",
  time_limit: "The call reached its time limit",
  ended: "Call ended",
};

function useClock(since: number | null): string {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!since) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [since]);
  if (!since) return "";
  const s = Math.max(0, Math.floor((now - since) / 1000));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, "0");
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function Video({ stream, muted, mirrored, testid, label, hidden }: { stream: MediaStream | null; muted?: boolean; mirrored?: boolean; testid: string; label: string; hidden?: boolean }) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    if (el.srcObject !== stream) el.srcObject = stream;
    if (stream) void el.play().catch(() => undefined);
  }, [stream]);
  return (
    <video
      ref={ref}
      class={`call-video ${mirrored ? "call-video--mirror" : ""} ${hidden ? "call-video--hidden" : ""}`}
      data-testid={testid}
      autoplay
      playsInline
      muted={muted}
      aria-label={label}
    />
  );
}

function hasLiveVideo(stream: MediaStream | null): boolean {
  return !!stream && stream.getVideoTracks().some((t) => t.readyState === "live");
}

export function CallScreen({ manager, active, conv, me }: { manager: CallManager; active: ActiveCall; conv: Conversation | null; me: string | null }) {
  const [minimized, setMinimized] = useState(false);
  const clock = useClock(active.connectedAt);
  const hangupRef = useRef<HTMLButtonElement>(null);
  const call = active.call;
  const nameOf = (userId: string | null) => (userId && conv?.members.find((m) => m.user_id === userId)?.display_name) || "Participant";
  const title =
    conv?.kind === "group"
      ? conv.title || "Group call"
      : conv?.members.find((m) => m.user_id !== me)?.display_name ?? "Call";
  const video = call.media === "video";
  const status =
    active.phase === "starting"
      ? "Getting your microphone and camera…"
      : active.phase === "calling"
        ? "Ringing…"
        : active.phase === "connecting"
          ? "Connecting…"
          : active.phase === "reconnecting"
            ? "Reconnecting…"
            : active.phase === "ended"
              ? REASONS[active.endReason ?? "ended"] ?? "Call ended"
              : call.mode === "livekit"
                ? "LiveKit room (media not connected in this build)"
                : clock || "Connected";

  useEffect(() => {
    if (!minimized) hangupRef.current?.focus();
  }, [minimized]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape" && !minimized) setMinimized(true);
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [minimized]);

  const remotes = active.remotes;
  const group = call.mode !== "p2p" || remotes.length > 1;
  const ended = active.phase === "ended";

  return (
    <div
      class={`call-screen ${minimized ? "call-screen--mini" : ""} ${ended ? "call-screen--ended" : ""}`}
      data-testid="call-screen"
      data-phase={active.phase}
      data-mode={call.mode}
      role={minimized ? "region" : "dialog"}
      aria-modal={minimized ? undefined : true}
      aria-label={`${video ? "Video" : "Audio"} call with ${title}`}
    >
      <div class="call-stage">
        {call.mode === "livekit" && !ended ? (
          <LiveKitPanel active={active} />
        ) : remotes.length === 0 ? (
          <div class="call-waiting">
            <Avatar name={title} size="xl" decorative />
            <p class="call-waiting__name">{title}</p>
          </div>
        ) : (
          <div class={`call-grid call-grid--${Math.min(remotes.length, 4)} ${group ? "call-grid--group" : ""}`}>
            {remotes.map((tile) => (
              <RemoteView key={tile.key} tile={tile} name={nameOf(tile.userId)} video={video} />
            ))}
          </div>
        )}
        {video && active.local && !ended && (
          <div class="call-self">
            <Video stream={active.local} muted mirrored testid="local-video" label="Your camera" hidden={!active.cameraOn} />
            {!active.cameraOn && <span class="call-self__off">Camera off</span>}
          </div>
        )}
      </div>
      <div class="call-bar">
        <div class="call-bar__info">
          <p class="call-bar__title">{title}</p>
          <p class="call-bar__status" role="status" aria-live="polite">
            {status}
            {active.stats && active.phase === "connected" && !minimized && (
              <span class="call-bar__stats dim">
                {" "}
                · {call.mode === "p2p" ? "P2P" : call.mode.toUpperCase()}
                {active.stats.candidateType ? ` · ${active.stats.candidateType}` : ""}
                {active.stats.rttMs != null ? ` · ${active.stats.rttMs} ms` : ""}
              </span>
            )}
          </p>
          {active.error && <p class="call-bar__error pink">{active.error}</p>}
        </div>
        <div class="call-bar__controls">
          {!ended && (
            <>
              <IconButton
                label={active.micOn ? "Mute microphone" : "Unmute microphone"}
                icon={active.micOn ? "🎙" : "🔇"}
                pressed={!active.micOn}
                variant="secondary"
                disabled={!active.local?.getAudioTracks().length}
                onClick={() => manager.toggleMic()}
              />
              {video && (
                <IconButton
                  label={active.cameraOn ? "Turn camera off" : "Turn camera on"}
                  icon={active.cameraOn ? "📷" : "🚫"}
                  pressed={!active.cameraOn}
                  variant="secondary"
                  disabled={!active.local?.getVideoTracks().length}
                  onClick={() => manager.toggleCamera()}
                />
              )}
            </>
          )}
          <IconButton
            label={minimized ? "Open call" : "Minimize call"}
            icon={minimized ? "⤢" : "⤡"}
            variant="secondary"
            onClick={() => setMinimized(!minimized)}
          />
          {ended ? (
            <IconButton label="Close" icon="✕" variant="secondary" onClick={() => manager.dismiss()} />
          ) : (
            <button ref={hangupRef} type="button" class="btn btn--danger call-hangup" aria-label="Hang up" title="Hang up" onClick={() => void manager.hangup()}>
              <span aria-hidden="true">✆</span>
              <span class="call-hangup__text">Hang up</span>
            </button>
          )}
        </div>
      </div>
    </div>
  );
}

function RemoteView({ tile, name, video }: { tile: RemoteTile; name: string; video: boolean }) {
  // Re-render when tracks come, go, mute or unmute.
  const [, bump] = useState(0);
  useEffect(() => {
    const s = tile.stream;
    const on = () => bump((n) => n + 1);
    s.addEventListener("addtrack", on);
    s.addEventListener("removetrack", on);
    const tracks = s.getTracks();
    tracks.forEach((t) => {
      t.addEventListener("mute", on);
      t.addEventListener("unmute", on);
      t.addEventListener("ended", on);
    });
    return () => {
      s.removeEventListener("addtrack", on);
      s.removeEventListener("removetrack", on);
      tracks.forEach((t) => {
        t.removeEventListener("mute", on);
        t.removeEventListener("unmute", on);
        t.removeEventListener("ended", on);
      });
    };
  }, [tile.stream]);
  const showVideo = video && hasLiveVideo(tile.stream);
  return (
    <figure class="call-tile">
      <Video stream={tile.stream} testid="remote-video" label={`${name}'s video`} hidden={!showVideo} />
      {!showVideo && (
        <div class="call-tile__avatar">
          <Avatar name={name} size="xl" decorative />
        </div>
      )}
      <figcaption class="call-tile__name">{name}</figcaption>
    </figure>
  );
}

function LiveKitPanel({ active }: { active: ActiveCall }) {
  const lk = active.livekit;
  return (
    <div class="call-livekit">
      <h2 class="call-livekit__title">LiveKit group call</h2>
      <p>
        This server runs group calls on LiveKit. The LiveKit client SDK is loaded only when LiveKit is configured, and this
        build does not include it yet, so media for this call is not connected here.
      </p>
      {lk ? (
        <dl class="call-livekit__info">
          <dt>Room</dt>
          <dd>{lk.room}</dd>
          <dt>Server</dt>
          <dd>{lk.url}</dd>
          <dt>Token</dt>
          <dd>issued for you (valid for this room only)</dd>
        </dl>
      ) : (
        <p class="dim">Waiting for the room details…</p>
      )}
    </div>
  );
}
