/** A small typed event emitter: `on(type, fn)` returns the function that removes the listener. */
export type Listener<T> = (payload: T) => void;

export class TypedEmitter<Events extends { [K in keyof Events]: unknown }> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();
  private readonly anyListeners = new Set<(type: keyof Events, payload: unknown) => void>();

  constructor(private readonly onListenerError: (error: unknown) => void = defaultListenerError) {}

  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(type, listener);
  }

  once<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(type, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    const set = this.listeners.get(type);
    set?.delete(listener as Listener<never>);
    if (set && !set.size) this.listeners.delete(type);
  }

  /** Every emitted event, whatever its type (after the type's own listeners). */
  onAny(listener: (type: keyof Events, payload: unknown) => void): () => void {
    this.anyListeners.add(listener);
    return () => this.anyListeners.delete(listener);
  }

  /** A promise of the next event of this type that passes `filter`. */
  next<K extends keyof Events>(type: K, filter: (payload: Events[K]) => boolean = () => true): Promise<Events[K]> {
    return new Promise((resolve) => {
      const off = this.on(type, (payload) => {
        if (!filter(payload)) return;
        off();
        resolve(payload);
      });
    });
  }

  emit<K extends keyof Events>(type: K, payload: Events[K]): void {
    const set = this.listeners.get(type);
    if (set) {
      for (const listener of [...set]) {
        try {
          (listener as Listener<Events[K]>)(payload);
        } catch (error) {
          this.onListenerError(error);
        }
      }
    }
    for (const listener of [...this.anyListeners]) {
      try {
        listener(type, payload);
      } catch (error) {
        this.onListenerError(error);
      }
    }
  }

  listenerCount(type: keyof Events): number {
    return this.listeners.get(type)?.size ?? 0;
  }
}

function defaultListenerError(error: unknown): void {
  console.error("kintsugi: an event listener threw", error);
}
