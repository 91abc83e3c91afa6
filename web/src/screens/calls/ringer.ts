/**
 * Ring tones made with WebAudio oscillators (no audio files): the incoming ring (two tones, 1 s on,
 * 2 s off) and the outgoing ringback (one soft tone). Browsers keep an AudioContext suspended until
 * the page had a user gesture; `unlock()` from a click resumes it, and a ring that cannot sound
 * stays silent (the modal is still shown).
 */
type Pattern = "incoming" | "outgoing";

export class Ringer {
  private ctx: AudioContext | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private pattern: Pattern | null = null;
  private nodes: AudioNode[] = [];

  private context(): AudioContext | null {
    if (this.ctx) return this.ctx;
    const Ctor = (window as unknown as { AudioContext?: typeof AudioContext; webkitAudioContext?: typeof AudioContext }).AudioContext
      ?? (window as unknown as { webkitAudioContext?: typeof AudioContext }).webkitAudioContext;
    if (!Ctor) return null;
    try {
      this.ctx = new Ctor();
    } catch {
      return null;
    }
    return this.ctx;
  }

  unlock(): void {
    const ctx = this.context();
    if (ctx && ctx.state === "suspended") void ctx.resume().catch(() => undefined);
  }

  start(pattern: Pattern): void {
    if (this.pattern === pattern) return;
    this.stop();
    this.pattern = pattern;
    const ctx = this.context();
    if (!ctx) return;
    if (ctx.state === "suspended") void ctx.resume().catch(() => undefined);
    const period = pattern === "incoming" ? 3000 : 4000;
    const burst = () => this.burst(pattern);
    burst();
    this.timer = setInterval(burst, period);
  }

  private burst(pattern: Pattern): void {
    const ctx = this.ctx;
    if (!ctx || ctx.state !== "running") return;
    const now = ctx.currentTime;
    const gain = ctx.createGain();
    gain.connect(ctx.destination);
    const freqs = pattern === "incoming" ? [440, 480] : [425];
    const level = pattern === "incoming" ? 0.12 : 0.06;
    const length = pattern === "incoming" ? 1.0 : 1.2;
    gain.gain.setValueAtTime(0, now);
    gain.gain.linearRampToValueAtTime(level, now + 0.03);
    if (pattern === "incoming") {
      // Two short rings within the burst.
      gain.gain.setValueAtTime(level, now + 0.4);
      gain.gain.linearRampToValueAtTime(0, now + 0.43);
      gain.gain.linearRampToValueAtTime(level, now + 0.6);
    }
    gain.gain.setValueAtTime(level, now + length - 0.05);
    gain.gain.linearRampToValueAtTime(0, now + length);
    for (const f of freqs) {
      const osc = ctx.createOscillator();
      osc.type = "sine";
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start(now);
      osc.stop(now + length + 0.05);
      this.nodes.push(osc);
      osc.onended = () => {
        this.nodes = this.nodes.filter((n) => n !== osc);
      };
    }
    this.nodes.push(gain);
  }

  stop(): void {
    this.pattern = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const n of this.nodes) {
      try {
        if (n instanceof OscillatorNode) n.stop();
        n.disconnect();
      } catch {
        /* already stopped */
      }
    }
    this.nodes = [];
  }
}
