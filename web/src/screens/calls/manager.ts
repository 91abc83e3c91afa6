/**
 * Calls on the socket (docs/calls.md): ringing, answering, WebRTC signaling and the media paths.
 * One `CallManager` per client (`callsFor(client)`), created by the always-mounted call layer
 * (./incoming.tsx) and used by the messenger's call buttons and the call history.
 *
 * - P2P (two people): the caller (`call.caller_id`) always offers, to the party named by
 *   `call.accepted`; the callee answers whatever offer comes. ICE trickles with `ice` / `ice_end`.
 * - After a reconnect: `call.join` (a new party id); the caller offers again with an ICE restart to
 *   the other party, the callee waits for it (its new party reaches the caller as `call.accepted`).
 * - P2P failing: `call.fallback` moves the call to the SFU (`call.mode`).
 * - SFU (groups, or after fallback): a publishing connection to "sfu" (we offer, sendonly) and a
 *   receiving one from "sfu/sub" (it offers; each track's stream id is its publisher's party id).
 * - LiveKit (groups when the server has LiveKit): the room's url/token are shown; the SDK is not
 *   bundled in this build (see the call screen).
 * - `call.stats` once each connection is up (and when it fails).
 */
import type {
  CallInfo,
  Candidate,
  KintsugiClient,
  LiveKitJoin,
  IceServer,
  CallJoined,
} from "@kintsugi/rt-client";
import { createStore, type Store } from "../../lib/store";
import { Ringer } from "./ringer";

export type CallPhase = "starting" | "calling" | "connecting" | "connected" | "reconnecting" | "ended";

export interface RemoteTile {
  /** The publisher's party id (SFU) or "peer" (P2P). */
  key: string;
  userId: string | null;
  stream: MediaStream;
}

export interface CallStatsView {
  iceState: string;
  candidateType: string | null;
  rttMs: number | null;
  setupMs: number | null;
}

export interface ActiveCall {
  call: CallInfo;
  /** This device's party id (null until the server answered). */
  partyId: string | null;
  livekit: LiveKitJoin | null;
  phase: CallPhase;
  outgoing: boolean;
  endReason: string | null;
  /** When media first flowed (for the timer). */
  connectedAt: number | null;
  local: MediaStream | null;
  remotes: RemoteTile[];
  micOn: boolean;
  cameraOn: boolean;
  error: string | null;
  stats: CallStatsView | null;
}

export interface CallsState {
  /** Calls ringing for us (newest last). */
  ringing: CallInfo[];
  active: ActiveCall | null;
}

type SignalKind = "answer" | "ice" | "ice_end" | "offer" | "renegotiate";
interface SignalIn {
  call_id: string;
  from: string;
  from_user: string | null;
  kind: SignalKind;
  sdp?: string | null;
  candidate?: Candidate | null;
}

/** One RTCPeerConnection with its ICE candidates queued until it has a remote description. */
class Link {
  pc: RTCPeerConnection;
  remote: string | null;
  private queue: RTCIceCandidateInit[] = [];
  connectedOnce = false;
  statsSent = false;

  constructor(
    iceServers: RTCIceServer[],
    remote: string | null,
    private readonly sendSignal: (to: string, kind: SignalKind, extra: { sdp?: string; candidate?: Candidate }) => void,
  ) {
    this.remote = remote;
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc.onicecandidate = (event) => {
      if (!this.remote) return;
      if (event.candidate) {
        const c = event.candidate.toJSON();
        if (!c.candidate) return;
        this.sendSignal(this.remote, "ice", {
          candidate: { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null, usernameFragment: c.usernameFragment ?? null },
        });
      } else {
        this.sendSignal(this.remote, "ice_end", {});
      }
    };
  }

  async addCandidate(candidate: Candidate | null | undefined): Promise<void> {
    if (!candidate?.candidate) return;
    const init: RTCIceCandidateInit = {
      candidate: candidate.candidate,
      sdpMid: candidate.sdpMid ?? null,
      sdpMLineIndex: candidate.sdpMLineIndex ?? null,
      ...(candidate.usernameFragment ? { usernameFragment: candidate.usernameFragment } : {}),
    };
    if (!this.pc.remoteDescription) {
      this.queue.push(init);
      return;
    }
    try {
      await this.pc.addIceCandidate(init);
    } catch {
      /* a candidate of an older generation (after an ICE restart) */
    }
  }

  async flush(): Promise<void> {
    const queued = this.queue;
    this.queue = [];
    for (const c of queued) {
      try {
        await this.pc.addIceCandidate(c);
      } catch {
        /* stale */
      }
    }
  }

  close(): void {
    this.pc.onicecandidate = null;
    this.pc.ontrack = null;
    this.pc.onconnectionstatechange = null;
    try {
      this.pc.close();
    } catch {
      /* already closed */
    }
  }
}

export class CallManager {
  readonly store: Store<CallsState>;
  private readonly offs: Array<() => void> = [];
  private readonly ringer = new Ringer();
  private iceServers: RTCIceServer[] = [];
  /** P2P connection (mode p2p). */
  private p2p: Link | null = null;
  /** SFU publishing / receiving connections. */
  private pub: Link | null = null;
  private sub: Link | null = null;
  /** Signals that arrived before the reply to start/accept/join gave us our party and ICE servers. */
  private early: SignalIn[] = [];
  private ready = false;
  private setupStart = 0;
  private clearTimer: ReturnType<typeof setTimeout> | null = null;
  private restartTried = false;
  private fallbackAsked = false;
  /** party id → user id, from the call's participants and `call.accepted`. */
  private parties = new Map<string, string>();
  /** Serialises signal handling (one change to a connection at a time). */
  private chain: Promise<void> = Promise.resolve();

  constructor(readonly client: KintsugiClient) {
    this.store = createStore<CallsState>({ ringing: [], active: null });
    const c = client;
    this.offs.push(
      c.on("call.ringing", ({ call }) => this.onRinging(call)),
      c.on("call.answered_elsewhere", ({ call_id, party_id }) => {
        if (this.active?.call.id === call_id && this.active.partyId === party_id) return;
        this.dropRinging(call_id);
      }),
      c.on("call.accepted", ({ call_id, user_id, party_id }) => this.onAccepted(call_id, user_id, party_id)),
      c.on("call.participant", (event) => this.onParticipant(event.call_id, event.user_id, event.state, event.party_id ?? null)),
      c.on("call.mode", ({ call }) => this.onMode(call)),
      c.on("call.ended", (event) => this.onEnded(event.call_id, event.reason, event.duration_s ?? null)),
      c.on("call.signal", (signal) => this.onSignal(signal)),
      c.on("connected", ({ hello }) => this.onReconnected(hello.conn_id)),
    );
  }

  dispose(): void {
    this.offs.forEach((off) => off());
    this.ringer.stop();
    this.teardown();
  }

  get me(): string | null {
    return this.client.hello?.user_id ?? null;
  }

  get active(): ActiveCall | null {
    return this.store.get().active;
  }

  private patch(patch: Partial<ActiveCall>): void {
    this.store.set((s) => (s.active ? { ...s, active: { ...s.active, ...patch } } : s));
  }

  // --- ringing ----------------------------------------------------------------------------------

  private onRinging(call: CallInfo): void {
    const me = this.me;
    if (call.caller_id === me) return;
    const mine = call.participants.find((p) => p.user_id === me);
    if (mine && mine.state !== "ringing") return;
    if (call.state === "ended") return;
    if (this.active && this.active.call.id === call.id) return;
    this.store.set((s) => ({ ...s, ringing: [...s.ringing.filter((c) => c.id !== call.id), call] }));
    this.updateRinger();
  }

  private dropRinging(callId: string): void {
    this.store.set((s) => (s.ringing.some((c) => c.id === callId) ? { ...s, ringing: s.ringing.filter((c) => c.id !== callId) } : s));
    this.updateRinger();
  }

  private silenced = new Set<string>();

  /** Stop the ring tone of the calls ringing now (the modal stays: answer or decline). */
  silence(): void {
    for (const c of this.store.get().ringing) this.silenced.add(c.id);
    this.updateRinger();
  }

  private updateRinger(): void {
    const { ringing, active } = this.store.get();
    if (ringing.some((c) => !this.silenced.has(c.id))) this.ringer.start("incoming");
    else if (active?.phase === "calling") this.ringer.start("outgoing");
    else this.ringer.stop();
  }

  /** Try to unlock audio (call from a user gesture). */
  unlockAudio(): void {
    this.ringer.unlock();
  }

  async decline(callId: string): Promise<void> {
    this.dropRinging(callId);
    try {
      await this.client.request("call.decline", { call_id: callId });
    } catch {
      /* already over */
    }
  }

  // --- starting and answering ---------------------------------------------------------------------

  /** Call a conversation (joins the live call there, if there is one). */
  async start(conversationId: string, media: "audio" | "video"): Promise<void> {
    if (this.active && this.active.phase !== "ended") throw new Error("You are already in a call.");
    this.reset();
    const placeholder: CallInfo = {
      id: "",
      conversation_id: conversationId,
      caller_id: this.me,
      media,
      mode: "p2p",
      state: "ringing",
      created_at: new Date().toISOString(),
      participants: [],
    };
    this.store.set((s) => ({ ...s, active: this.fresh(placeholder, true) }));
    const local = await getMedia(media);
    this.patch({ local: local.stream, error: local.error, micOn: hasKind(local.stream, "audio"), cameraOn: hasKind(local.stream, "video") });
    let reply: CallJoined;
    try {
      reply = await this.client.request("call.start", { conversation_id: conversationId, media });
    } catch (error) {
      this.finish(null, errorText(error));
      return;
    }
    if (reply.call.state === "ended") {
      this.patch({ call: reply.call });
      this.finish(reply.call.end_reason ?? "ended", null);
      return;
    }
    this.dropRinging(reply.call.id); // glare: our start answered the call that rang here
    this.setupStart = Date.now();
    this.joined(reply, reply.call.state === "active" ? "connecting" : "calling");
  }

  /** Answer a ringing call on this device. */
  async accept(callId: string): Promise<void> {
    const call = this.store.get().ringing.find((c) => c.id === callId);
    if (!call) return;
    if (this.active && this.active.phase !== "ended") await this.hangup();
    this.reset();
    this.dropRinging(callId);
    this.store.set((s) => ({ ...s, active: this.fresh(call, false, "connecting") }));
    const local = await getMedia(call.media);
    this.patch({ local: local.stream, error: local.error, micOn: hasKind(local.stream, "audio"), cameraOn: hasKind(local.stream, "video") });
    this.setupStart = Date.now();
    let reply: CallJoined;
    try {
      reply = await this.client.request("call.accept", { call_id: callId });
    } catch (error) {
      this.finish(null, errorText(error));
      return;
    }
    this.joined(reply, "connecting");
  }

  /** Join a call in progress (a group call from the history, or after a reload). */
  async join(callId: string, media: "audio" | "video", conversationId: string): Promise<void> {
    if (this.active && this.active.phase !== "ended") throw new Error("You are already in a call.");
    this.reset();
    const placeholder: CallInfo = {
      id: callId,
      conversation_id: conversationId,
      caller_id: null,
      media,
      mode: "sfu",
      state: "active",
      created_at: new Date().toISOString(),
      participants: [],
    };
    this.store.set((s) => ({ ...s, active: this.fresh(placeholder, false, "connecting") }));
    const local = await getMedia(media);
    this.patch({ local: local.stream, error: local.error, micOn: hasKind(local.stream, "audio"), cameraOn: hasKind(local.stream, "video") });
    this.setupStart = Date.now();
    try {
      const reply = await this.client.request("call.join", { call_id: callId });
      this.joined(reply, "connecting");
    } catch (error) {
      this.finish(null, errorText(error));
    }
  }

  private fresh(call: CallInfo, outgoing: boolean, phase: CallPhase = "starting"): ActiveCall {
    return {
      call,
      partyId: null,
      livekit: null,
      phase,
      outgoing,
      endReason: null,
      connectedAt: null,
      local: null,
      remotes: [],
      micOn: false,
      cameraOn: false,
      error: null,
      stats: null,
    };
  }

  /** The reply to start / accept / join: our party, the ICE servers, the media path. */
  private joined(reply: CallJoined, phase: CallPhase): void {
    const active = this.active;
    if (!active || active.phase === "ended") {
      // Hung up while the request was in flight.
      void this.client.request("call.hangup", { call_id: reply.call.id }).catch(() => undefined);
      return;
    }
    this.iceServers = toRtc(reply.ice_servers);
    for (const p of reply.call.participants) if (p.party_id) this.parties.set(p.party_id, p.user_id);
    this.patch({ call: reply.call, partyId: reply.party_id, livekit: reply.livekit ?? null, phase });
    this.updateRinger();
    this.ready = true;
    this.connectMedia();
    const early = this.early;
    this.early = [];
    for (const s of early) this.onSignal(s);
  }

  /** Set up the media path of the call's mode. */
  private connectMedia(): void {
    const a = this.active;
    if (!a || !a.partyId) return;
    if (a.call.mode === "p2p") {
      if (a.call.caller_id === this.me) {
        // The caller offers to the other party once it is known (now, after glare; else on call.accepted).
        const other = a.call.participants.find((p) => p.user_id !== this.me && p.state === "joined" && p.party_id);
        if (other?.party_id) this.offerP2p(other.party_id, false);
      }
    } else if (a.call.mode === "sfu") {
      void this.startSfu();
    } else {
      // LiveKit: the room's url and token are in `livekit`; this build has no SDK (call screen says so).
      this.patch({ phase: "connected", connectedAt: Date.now() });
    }
  }

  // --- events -------------------------------------------------------------------------------------

  private onAccepted(callId: string, userId: string, partyId: string): void {
    this.parties.set(partyId, userId);
    this.store.set((s) => {
      if (!s.active || s.active.call.id !== callId) return s;
      const participants = s.active.call.participants.filter((p) => p.user_id !== userId);
      participants.push({ user_id: userId, state: "joined", party_id: partyId });
      return { ...s, active: { ...s.active, call: { ...s.active.call, participants, state: "active" } } };
    });
    const a = this.active;
    if (!a || a.call.id !== callId || a.phase === "ended" || partyId === a.partyId) return;
    if (userId === this.me && a.call.mode === "p2p") return; // our other device (glare on two devices)
    if (a.phase === "calling") {
      this.patch({ phase: "connecting" });
      this.setupStart = Date.now();
      this.updateRinger();
    }
    if (a.call.mode === "p2p" && a.call.caller_id === this.me && this.ready) {
      // The callee's device (a new one after its reconnect: restart ICE towards it).
      this.offerP2p(partyId, !!this.p2p);
    }
  }

  private onParticipant(callId: string, userId: string, state: string, partyId: string | null): void {
    if (userId === this.me && (state === "declined" || state === "missed" || state === "joined")) this.dropRinging(callId);
    const a = this.active;
    if (!a || a.call.id !== callId) return;
    this.store.set((s) => {
      if (!s.active) return s;
      const others = s.active.call.participants.filter((p) => p.user_id !== userId);
      const participant = { user_id: userId, state: state as "joined", ...(partyId ? { party_id: partyId } : {}) };
      const remotes = state === "left" ? s.active.remotes.filter((t) => t.userId !== userId) : s.active.remotes;
      return { ...s, active: { ...s.active, remotes, call: { ...s.active.call, participants: [...others, participant] } } };
    });
  }

  private onMode(call: CallInfo): void {
    const a = this.active;
    if (!a || a.call.id !== call.id || a.phase === "ended") return;
    const changed = a.call.mode !== call.mode;
    this.patch({ call });
    if (!changed) return;
    this.p2p?.close();
    this.p2p = null;
    this.patch({ remotes: [], phase: "connecting" });
    this.setupStart = Date.now();
    this.connectMedia();
  }

  private onEnded(callId: string, reason: string, _durationS: number | null): void {
    this.dropRinging(callId);
    const a = this.active;
    if (a && a.call.id === callId && a.phase !== "ended") this.finish(reason, null);
  }

  private onSignal(signal: SignalIn): void {
    const a = this.active;
    if (!a || a.phase === "ended") return;
    if (a.call.id && signal.call_id !== a.call.id) return;
    if (!this.ready) {
      this.early.push(signal);
      return;
    }
    if (signal.from_user && !signal.from.startsWith("sfu")) this.parties.set(signal.from, signal.from_user);
    this.chain = this.chain.then(() => this.handleSignal(signal)).catch((error) => console.warn("call signal", error));
  }

  private async handleSignal(s: SignalIn): Promise<void> {
    const a = this.active;
    if (!a || a.phase === "ended") return;
    if (s.from === "sfu") {
      if (!this.pub) return;
      if (s.kind === "answer" && s.sdp) {
        await this.pub.pc.setRemoteDescription({ type: "answer", sdp: s.sdp });
        await this.pub.flush();
      } else if (s.kind === "ice") await this.pub.addCandidate(s.candidate);
      return;
    }
    if (s.from === "sfu/sub") {
      if (s.kind === "renegotiate") {
        this.sub?.close();
        this.sub = null;
        this.patch({ remotes: [] });
      } else if (s.kind === "offer" && s.sdp) {
        if (!this.sub) this.sub = this.makeSubLink();
        try {
          await this.sub.pc.setRemoteDescription({ type: "offer", sdp: s.sdp });
        } catch {
          this.sub.close();
          this.sub = null;
          this.sendSignal("sfu/sub", "renegotiate", {});
          return;
        }
        await this.sub.flush();
        const answer = await this.sub.pc.createAnswer();
        await this.sub.pc.setLocalDescription(answer);
        this.sendSignal("sfu/sub", "answer", { sdp: this.sub.pc.localDescription?.sdp ?? answer.sdp ?? "" });
      } else if (s.kind === "ice") await this.sub?.addCandidate(s.candidate);
      return;
    }
    // Peer to peer.
    if (a.call.mode !== "p2p") return;
    if (s.kind === "offer" && s.sdp) {
      if (!this.p2p) this.p2p = this.makeP2pLink(s.from);
      this.p2p.remote = s.from;
      try {
        await this.p2p.pc.setRemoteDescription({ type: "offer", sdp: s.sdp });
      } catch {
        // A fresh offer from a new device of the caller: start over with a new connection.
        this.p2p.close();
        this.p2p = this.makeP2pLink(s.from);
        await this.p2p.pc.setRemoteDescription({ type: "offer", sdp: s.sdp });
      }
      await this.p2p.flush();
      const answer = await this.p2p.pc.createAnswer();
      await this.p2p.pc.setLocalDescription(answer);
      this.sendSignal(s.from, "answer", { sdp: this.p2p.pc.localDescription?.sdp ?? answer.sdp ?? "" });
    } else if (s.kind === "answer" && s.sdp) {
      if (!this.p2p || this.p2p.remote !== s.from) return;
      try {
        await this.p2p.pc.setRemoteDescription({ type: "answer", sdp: s.sdp });
        await this.p2p.flush();
      } catch {
        // The other side answered from a brand-new connection: offer again from a new one too.
        const to = s.from;
        this.p2p.close();
        this.p2p = null;
        this.offerP2p(to, false);
      }
    } else if (s.kind === "ice") {
      if (this.p2p && (this.p2p.remote === s.from || !this.p2p.remote)) await this.p2p.addCandidate(s.candidate);
    }
  }

  // --- P2P --------------------------------------------------------------------------------------

  private makeP2pLink(remote: string | null): Link {
    const link = new Link(this.iceServers, remote, (to, kind, extra) => this.sendSignal(to, kind, extra));
    const a = this.active;
    const local = a?.local;
    const kinds = new Set<string>();
    if (local) {
      for (const track of local.getTracks()) {
        link.pc.addTrack(track, local);
        kinds.add(track.kind);
      }
    }
    // Receive what we do not send (no camera, or an audio-only device in a video call).
    if (!kinds.has("audio")) link.pc.addTransceiver("audio", { direction: "recvonly" });
    if (a?.call.media === "video" && !kinds.has("video")) link.pc.addTransceiver("video", { direction: "recvonly" });
    link.pc.ontrack = (event) => {
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      this.setRemote({ key: "peer", userId: this.parties.get(link.remote ?? "") ?? null, stream });
    };
    link.pc.onconnectionstatechange = () => this.linkState(link, "p2p");
    return link;
  }

  private offerP2p(to: string, iceRestart: boolean): void {
    this.chain = this.chain
      .then(async () => {
        if (!this.p2p) this.p2p = this.makeP2pLink(to);
        this.p2p.remote = to;
        const offer = await this.p2p.pc.createOffer(iceRestart ? { iceRestart: true } : {});
        await this.p2p.pc.setLocalDescription(offer);
        this.sendSignal(to, "offer", { sdp: this.p2p.pc.localDescription?.sdp ?? offer.sdp ?? "" });
      })
      .catch((error) => console.warn("call offer", error));
  }

  // --- SFU --------------------------------------------------------------------------------------

  private async startSfu(restart = false): Promise<void> {
    this.chain = this.chain
      .then(async () => {
        const local = this.active?.local;
        const tracks = local?.getTracks() ?? [];
        if (!this.pub || !restart) {
          this.pub?.close();
          this.pub = new Link(this.iceServers, "sfu", (to, kind, extra) => this.sendSignal(to, kind, extra));
          for (const track of tracks) this.pub.pc.addTransceiver(track, { direction: "sendonly", streams: local ? [local] : [] });
          const pub = this.pub;
          pub.pc.onconnectionstatechange = () => this.linkState(pub, "sfu");
        }
        if (!tracks.length) {
          // Nothing to publish: ask for the receiving connection only.
          this.sendSignal("sfu/sub", "renegotiate", {});
          this.patch({ phase: "connected", connectedAt: this.active?.connectedAt ?? Date.now() });
          return;
        }
        const offer = await this.pub.pc.createOffer(restart ? { iceRestart: true } : {});
        await this.pub.pc.setLocalDescription(offer);
        this.sendSignal("sfu", "offer", { sdp: this.pub.pc.localDescription?.sdp ?? offer.sdp ?? "" });
      })
      .catch((error) => console.warn("sfu publish", error));
  }

  private makeSubLink(): Link {
    const link = new Link(this.iceServers, "sfu/sub", (to, kind, extra) => this.sendSignal(to, kind, extra));
    link.pc.ontrack = (event) => {
      const stream = event.streams[0];
      if (!stream) return;
      const party = stream.id;
      this.setRemote({ key: party, userId: this.parties.get(party) ?? null, stream });
      const drop = () => {
        if (stream.getTracks().every((t) => t.readyState === "ended")) this.removeRemote(party);
      };
      stream.onremovetrack = drop;
      event.track.addEventListener("ended", drop);
    };
    link.pc.onconnectionstatechange = () => {
      if (link.pc.connectionState === "failed" && this.sub === link) {
        link.close();
        this.sub = null;
        this.sendSignal("sfu/sub", "renegotiate", {});
      }
    };
    return link;
  }

  // --- shared ---------------------------------------------------------------------------------------

  private setRemote(tile: RemoteTile): void {
    this.store.set((s) => {
      if (!s.active) return s;
      const remotes = s.active.remotes.filter((t) => t.key !== tile.key);
      remotes.push(tile);
      return { ...s, active: { ...s.active, remotes } };
    });
  }

  private removeRemote(key: string): void {
    this.store.set((s) => (s.active ? { ...s, active: { ...s.active, remotes: s.active.remotes.filter((t) => t.key !== key) } } : s));
  }

  private linkState(link: Link, path: "p2p" | "sfu"): void {
    const state = link.pc.connectionState;
    const a = this.active;
    if (!a || a.phase === "ended") return;
    if (state === "connected") {
      this.restartTried = false;
      this.patch({ phase: "connected", connectedAt: a.connectedAt ?? Date.now(), error: null });
      if (!link.connectedOnce) {
        link.connectedOnce = true;
        void this.reportStats(link);
      }
    } else if (state === "disconnected") {
      this.patch({ phase: "reconnecting" });
    } else if (state === "failed") {
      void this.reportStats(link, "failed");
      if (path === "p2p" && a.call.caller_id === this.me && !this.restartTried && link.remote) {
        // One ICE restart first; then move the call to the SFU.
        this.restartTried = true;
        this.patch({ phase: "reconnecting" });
        this.offerP2p(link.remote, true);
      } else if (path === "p2p" && !this.fallbackAsked) {
        this.fallbackAsked = true;
        this.patch({ phase: "reconnecting" });
        this.client.request("call.fallback", { call_id: a.call.id }).then(
          ({ call }) => this.onMode(call),
          () => undefined,
        );
      } else if (path === "sfu") {
        this.patch({ phase: "reconnecting" });
      }
    }
  }

  private async reportStats(link: Link, forced?: "failed"): Promise<void> {
    const a = this.active;
    if (!a || !a.call.id) return;
    let candidateType: string | null = null;
    let rttMs: number | null = null;
    try {
      const report = await link.pc.getStats();
      let pair: any = null;
      report.forEach((r: any) => {
        if (r.type === "transport" && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId) ?? pair;
      });
      if (!pair) {
        report.forEach((r: any) => {
          if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
        });
      }
      if (pair) {
        const local = report.get(pair.localCandidateId) as any;
        candidateType = local?.candidateType ?? null;
        if (typeof pair.currentRoundTripTime === "number") rttMs = Math.round(pair.currentRoundTripTime * 1000);
      }
    } catch {
      /* closed meanwhile */
    }
    const iceState = forced ?? link.pc.iceConnectionState;
    const setupMs = this.setupStart ? Date.now() - this.setupStart : null;
    const view: CallStatsView = { iceState, candidateType, rttMs, setupMs };
    this.patch({ stats: view });
    const allowed = ["host", "prflx", "relay", "srflx"];
    try {
      await this.client.request("call.stats", {
        call_id: a.call.id,
        ice_state: iceState as "connected",
        candidate_type: candidateType && allowed.includes(candidateType) ? (candidateType as "host") : null,
        rtt_ms: rttMs,
        setup_ms: setupMs,
      });
    } catch {
      /* metrics only */
    }
  }

  private sendSignal(to: string, kind: SignalKind, extra: { sdp?: string; candidate?: Candidate }): void {
    const a = this.active;
    if (!a || !a.call.id || a.phase === "ended") return;
    this.client
      .request("call.signal", { call_id: a.call.id, to, kind, sdp: extra.sdp ?? null, candidate: extra.candidate ?? null })
      .catch(() => undefined); // peer_gone: its call.accepted with a new party follows
  }

  /** A new socket while in a call: rejoin as a new party and re-signal (docs/calls.md). */
  private onReconnected(connId: string): void {
    const a = this.active;
    if (!a || a.phase === "ended" || !a.partyId || a.partyId === connId) return;
    // Let the replay of missed call events (a call.ended, perhaps) land first.
    setTimeout(() => void this.rejoin(), 400);
  }

  private async rejoin(): Promise<void> {
    const a = this.active;
    if (!a || a.phase === "ended" || !a.call.id) return;
    if (a.partyId === this.client.hello?.conn_id) return;
    if (a.phase === "calling" || a.phase === "starting") {
      // Still ringing: our party is the caller's; the callee's call.accepted will name the new one.
    }
    let reply: CallJoined;
    try {
      reply = await this.client.request("call.join", { call_id: a.call.id });
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === "call_ended" || code === "not_found") this.finish("ended", null);
      return;
    }
    this.iceServers = toRtc(reply.ice_servers);
    this.patch({ partyId: reply.party_id, call: reply.call, livekit: reply.livekit ?? this.active?.livekit ?? null });
    const call = reply.call;
    if (call.mode === "p2p") {
      if (call.caller_id === this.me) {
        const other = call.participants.find((p) => p.user_id !== this.me && p.state === "joined" && p.party_id);
        const to = other?.party_id ?? this.p2p?.remote;
        if (to) this.offerP2p(to, !!this.p2p);
      }
      // The callee waits for the caller's new offer.
    } else if (call.mode === "sfu") {
      this.sub?.close();
      this.sub = null;
      void this.startSfu(true);
      this.sendSignal("sfu/sub", "renegotiate", {});
    }
  }

  // --- controls ---------------------------------------------------------------------------------------

  toggleMic(): void {
    const a = this.active;
    if (!a?.local) return;
    const tracks = a.local.getAudioTracks();
    if (!tracks.length) return;
    const on = !a.micOn;
    tracks.forEach((t) => (t.enabled = on));
    this.patch({ micOn: on });
  }

  toggleCamera(): void {
    const a = this.active;
    if (!a?.local) return;
    const tracks = a.local.getVideoTracks();
    if (!tracks.length) return;
    const on = !a.cameraOn;
    tracks.forEach((t) => (t.enabled = on));
    this.patch({ cameraOn: on });
  }

  /** Leave: cancel while ringing out, hang up a two-party call, leave a group call. */
  async hangup(): Promise<void> {
    const a = this.active;
    if (!a || a.phase === "ended") {
      this.dismiss();
      return;
    }
    const id = a.call.id;
    const type = !id ? null : a.phase === "calling" ? "call.cancel" : a.call.mode === "p2p" ? "call.hangup" : "call.leave";
    this.finish("hangup", null);
    if (id && type) {
      try {
        await this.client.request(type, { call_id: id });
      } catch {
        /* already over */
      }
    }
  }

  /** Close the "call ended" screen now. */
  dismiss(): void {
    if (this.clearTimer) clearTimeout(this.clearTimer);
    this.clearTimer = null;
    this.store.set((s) => ({ ...s, active: null }));
  }

  private finish(reason: string | null, error: string | null): void {
    this.teardown();
    this.patch({ phase: "ended", endReason: reason, ...(error ? { error } : {}), remotes: [] });
    this.updateRinger();
    if (this.clearTimer) clearTimeout(this.clearTimer);
    this.clearTimer = setTimeout(() => this.dismiss(), error ? 6000 : 2500);
  }

  private teardown(): void {
    this.p2p?.close();
    this.pub?.close();
    this.sub?.close();
    this.p2p = this.pub = this.sub = null;
    this.active?.local?.getTracks().forEach((t) => t.stop());
    this.ready = false;
    this.early = [];
  }

  private reset(): void {
    this.teardown();
    if (this.clearTimer) clearTimeout(this.clearTimer);
    this.clearTimer = null;
    this.restartTried = false;
    this.fallbackAsked = false;
    this.parties.clear();
    this.setupStart = 0;
    this.chain = Promise.resolve();
  }
}

// --- helpers ------------------------------------------------------------------------------------------

function toRtc(servers: IceServer[]): RTCIceServer[] {
  return servers.map((s) => ({
    urls: s.urls,
    ...(s.username ? { username: s.username } : {}),
    ...(s.credential ? { credential: s.credential } : {}),
  }));
}

function hasKind(stream: MediaStream | null, kind: "audio" | "video"): boolean {
  return !!stream && stream.getTracks().some((t) => t.kind === kind);
}

async function getMedia(media: "audio" | "video"): Promise<{ stream: MediaStream | null; error: string | null }> {
  const devices = navigator.mediaDevices;
  if (!devices?.getUserMedia) return { stream: null, error: "This browser cannot use a microphone or camera here (HTTPS is needed)." };
  try {
    const stream = await devices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
      video: media === "video" ? { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: "user" } : false,
    });
    return { stream, error: null };
  } catch (first) {
    if (media === "video") {
      try {
        const stream = await devices.getUserMedia({ audio: true, video: false });
        return { stream, error: "No camera: you join with audio only." };
      } catch {
        /* fall through */
      }
    }
    return { stream: null, error: `No microphone access (${(first as Error)?.name ?? "error"}): you can listen only.` };
  }
}

function errorText(error: unknown): string {
  const code = (error as { code?: string })?.code;
  const message = (error as { message?: string })?.message ?? String(error);
  if (code === "call_too_large") return "This conversation has more members than your plan allows in a call.";
  if (code === "tier_required") return "Video calls need a higher plan.";
  if (code === "call_capacity") return "The call server is full right now. Try again later.";
  if (code === "call_ended") return "That call is over.";
  return message;
}

const instances = new WeakMap<KintsugiClient, CallManager>();

/** The call manager of this client (one per session). */
export function callsFor(client: KintsugiClient): CallManager {
  let m = instances.get(client);
  if (!m) {
    m = new CallManager(client);
    instances.set(client, m);
  }
  return m;
}
