/** The message input: text, photos/files, voice recording, reply and edit modes. */
import type { Conversation, Message } from "@kintsugi/rt-client";
import { useEffect, useRef, useState } from "preact/hooks";
import { IconButton, toast } from "../../ui";
import { formatBytes } from "../../lib/errors";
import type { Draft, Messenger } from "./model";
import { memberName, previewText, uploadKind } from "./util";

const MAX_TEXT = 4096;
/** Unsent text per conversation (kept while the app runs). */
const drafts = new Map<string, string>();

interface ComposerProps {
  model: Messenger;
  conv: Conversation;
  me: string | null;
  replyTo: Message | null;
  editing: Message | null;
  onCancelReply: () => void;
  onCancelEdit: () => void;
  textareaRef: { current: HTMLTextAreaElement | null };
}

type DraftFile = Draft["files"][number] & { preview: string | null };

export function Composer({ model, conv, me, replyTo, editing, onCancelReply, onCancelEdit, textareaRef }: ComposerProps) {
  const [text, setTextState] = useState(() => drafts.get(conv.id) ?? "");
  const setText = (value: string) => {
    drafts.set(conv.id, value);
    setTextState(value);
  };
  const [files, setFiles] = useState<DraftFile[]>([]);
  const [saving, setSaving] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const recorder = useVoiceRecorder((blob, durationMs) => {
    model.send(conv.id, {
      text: "",
      replyTo: replyTo?.id ?? null,
      files: [{ blob, kind: "voice", name: `voice-${Date.now()}.${blob.type.includes("ogg") ? "ogg" : blob.type.includes("mp4") ? "m4a" : "webm"}`, durationMs }],
    });
    onCancelReply();
  });

  useEffect(() => {
    setTextState(drafts.get(conv.id) ?? "");
    setFiles([]);
  }, [conv.id]);

  useEffect(() => {
    if (editing) {
      setText(editing.text ?? "");
      textareaRef.current?.focus();
    }
  }, [editing?.id]);

  useEffect(() => {
    if (replyTo) textareaRef.current?.focus();
  }, [replyTo?.id]);

  useEffect(() => () => files.forEach((f) => f.preview && URL.revokeObjectURL(f.preview)), []);

  const addFiles = (list: FileList | File[] | null) => {
    if (!list) return;
    const added: DraftFile[] = [];
    for (const file of Array.from(list)) {
      const kind = uploadKind(file);
      added.push({ blob: file, kind, name: file.name, preview: kind === "image" ? URL.createObjectURL(file) : null });
    }
    setFiles((f) => [...f, ...added].slice(0, 10));
  };

  const removeFile = (index: number) => {
    setFiles((list) => {
      const f = list[index];
      if (f?.preview) URL.revokeObjectURL(f.preview);
      return list.filter((_, i) => i !== index);
    });
  };

  const submit = async () => {
    const value = text.trim();
    if (editing) {
      if (!value || value === editing.text) {
        onCancelEdit();
        setText("");
        return;
      }
      setSaving(true);
      try {
        await model.edit(editing.id, value);
        onCancelEdit();
        setText("");
      } catch (error) {
        toast.error(error);
      } finally {
        setSaving(false);
      }
      return;
    }
    if (!value && !files.length) return;
    if (value.length > MAX_TEXT) {
      toast(`A message is at most ${MAX_TEXT} characters.`, { tone: "warning" });
      return;
    }
    model.send(conv.id, { text: value, replyTo: replyTo?.id ?? null, files: files.map(({ preview: _p, ...f }) => f) });
    files.forEach((f) => f.preview && URL.revokeObjectURL(f.preview));
    setFiles([]);
    setText("");
    onCancelReply();
    textareaRef.current?.focus();
  };

  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      void submit();
    } else if (event.key === "Escape") {
      if (editing) {
        onCancelEdit();
        setText("");
      } else if (replyTo) onCancelReply();
    }
  };

  const onPaste = (event: ClipboardEvent) => {
    const pasted = [...(event.clipboardData?.files ?? [])];
    if (pasted.length) {
      event.preventDefault();
      addFiles(pasted);
    }
  };

  const canSend = editing ? !!text.trim() : !!text.trim() || files.length > 0;

  if (recorder.recording) {
    return (
      <div class="msg-composer msg-composer--recording" role="group" aria-label="Recording a voice message">
        <span class="msg-rec__dot" aria-hidden="true" />
        <span class="msg-rec__time" role="timer" aria-live="off">
          {formatClock(recorder.elapsedMs)}
        </span>
        <span class="msg-rec__label">Recording…</span>
        <span class="spacer" />
        <IconButton label="Cancel recording" icon="✕" onClick={recorder.cancel} variant="secondary" />
        <IconButton label="Stop and send voice message" icon="➤" onClick={recorder.stop} variant="primary" />
      </div>
    );
  }

  return (
    <form
      class="msg-composer"
      onSubmit={(event) => {
        event.preventDefault();
        void submit();
      }}
      onDragOver={(event) => event.preventDefault()}
      onDrop={(event) => {
        event.preventDefault();
        addFiles(event.dataTransfer?.files ?? null);
      }}
    >
      {(replyTo || editing) && (
        <div class="msg-composer__context">
          <span class="msg-composer__context-bar" aria-hidden="true" />
          <div class="msg-composer__context-text">
            <strong class="caps">{editing ? "Editing" : `Reply to ${replyTo!.sender_id === me ? "yourself" : memberName(conv, replyTo!.sender_id)}`}</strong>
            <span class="msg-composer__context-preview">{previewText(editing ?? replyTo, me)}</span>
          </div>
          <IconButton
            label={editing ? "Cancel edit" : "Cancel reply"}
            icon="✕"
            size="sm"
            onClick={() => {
              if (editing) {
                onCancelEdit();
                setText("");
              } else onCancelReply();
            }}
          />
        </div>
      )}
      {files.length > 0 && (
        <ul class="msg-composer__files" aria-label="Attachments to send">
          {files.map((f, i) => (
            <li key={i} class="msg-composer__file">
              {f.preview ? <img src={f.preview} alt="" /> : <span aria-hidden="true">📎</span>}
              <span class="msg-composer__file-name">{f.name}</span>
              <span class="dim">{formatBytes(f.blob.size)}</span>
              <IconButton label={`Remove ${f.name}`} icon="✕" size="sm" onClick={() => removeFile(i)} />
            </li>
          ))}
        </ul>
      )}
      <div class="msg-composer__row">
        {!editing && (
          <>
            <input
              ref={fileInput}
              type="file"
              multiple
              class="sr-only"
              tabIndex={-1}
              aria-label="Files to attach"
              accept="image/*,video/*,audio/*,application/pdf,application/zip,text/plain,.doc,.docx,.xls,.xlsx,.ppt,.pptx,.odt,.ods,.odp"
              onChange={(event) => {
                addFiles((event.currentTarget as HTMLInputElement).files);
                (event.currentTarget as HTMLInputElement).value = "";
              }}
            />
            <IconButton label="Attach photo or file" icon="📎" class="msg-composer__attach" onClick={() => fileInput.current?.click()} />
          </>
        )}
        <label class="sr-only" for="msg-input">
          Message
        </label>
        <textarea
          id="msg-input"
          ref={textareaRef}
          class="input textarea msg-composer__input"
          rows={1}
          placeholder={editing ? "Edit your message" : "Write a message"}
          value={text}
          maxLength={MAX_TEXT + 100}
          onInput={(event) => {
            const value = (event.currentTarget as HTMLTextAreaElement).value;
            setText(value);
            if (value.trim() && !editing) model.typing(conv.id);
            autoGrow(event.currentTarget as HTMLTextAreaElement);
          }}
          onKeyDown={onKeyDown}
          onPaste={onPaste}
          enterkeyhint="send"
        />
        {!editing && !canSend && recorder.supported ? (
          <IconButton label="Record voice message" icon="🎤" variant="cyan" onClick={() => void recorder.start()} />
        ) : (
          <IconButton type="submit" label={editing ? "Save edit" : "Send"} icon={editing ? "✓" : "➤"} variant="primary" disabled={!canSend || saving} loading={saving} />
        )}
      </div>
      {text.length > MAX_TEXT - 200 && (
        <p class={`msg-composer__count ${text.length > MAX_TEXT ? "pink" : "dim"}`} aria-live="polite">
          {text.length} / {MAX_TEXT}
        </p>
      )}
    </form>
  );
}

function autoGrow(el: HTMLTextAreaElement) {
  el.style.height = "auto";
  el.style.height = `${Math.min(el.scrollHeight + 2, 180)}px`;
}

function formatClock(ms: number): string {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Voice messages with MediaRecorder (Opus in WebM or Ogg; MP4/AAC on Safari). */
function useVoiceRecorder(onDone: (blob: Blob, durationMs: number) => void) {
  const [recording, setRecording] = useState(false);
  const [elapsedMs, setElapsed] = useState(0);
  const rec = useRef<{ recorder: MediaRecorder; stream: MediaStream; started: number; chunks: Blob[]; cancelled: boolean; timer: ReturnType<typeof setInterval> } | null>(null);
  const supported = typeof window !== "undefined" && "MediaRecorder" in window && !!navigator.mediaDevices?.getUserMedia;
  const done = useRef(onDone);
  done.current = onDone;

  useEffect(() => () => stopAll(true), []);

  function stopAll(cancel: boolean) {
    const r = rec.current;
    if (!r) return;
    r.cancelled = cancel;
    clearInterval(r.timer);
    if (r.recorder.state !== "inactive") r.recorder.stop();
    r.stream.getTracks().forEach((t) => t.stop());
  }

  return {
    supported,
    recording,
    elapsedMs,
    async start() {
      let stream: MediaStream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch {
        toast("No microphone access: allow it in the browser to record voice messages.", { tone: "warning" });
        return;
      }
      const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];
      const mimeType = types.find((t) => MediaRecorder.isTypeSupported?.(t));
      const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
      const state = { recorder, stream, started: Date.now(), chunks: [] as Blob[], cancelled: false, timer: setInterval(() => setElapsed(Date.now() - state.started), 250) };
      rec.current = state;
      recorder.ondataavailable = (event) => {
        if (event.data.size) state.chunks.push(event.data);
      };
      recorder.onstop = () => {
        setRecording(false);
        setElapsed(0);
        rec.current = null;
        const durationMs = Date.now() - state.started;
        if (state.cancelled || !state.chunks.length || durationMs < 400) return;
        done.current(new Blob(state.chunks, { type: recorder.mimeType || mimeType || "audio/webm" }), durationMs);
      };
      recorder.start(250);
      setRecording(true);
    },
    stop() {
      stopAll(false);
    },
    cancel() {
      stopAll(true);
    },
  };
}
