/**
 * Safe markdown for model answers: markdown-it with `html: false` (any HTML in the text is shown
 * escaped, never parsed), markdown-it's link validation (no javascript:/vbscript:/file:/data:
 * URLs), images disabled (no tracking pixels from model output), links open in a new tab with
 * rel="noopener noreferrer nofollow", fenced code in a block with its language and a Copy button.
 * The output is therefore HTML built only from escaped text and markdown-it's own tags, and only
 * that output is ever given to `dangerouslySetInnerHTML`.
 */
import MarkdownIt from "markdown-it";

const md = new MarkdownIt({ html: false, linkify: true, breaks: false, typographer: false });
md.disable(["image"]);

const defaultLinkOpen = md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  const token = tokens[idx]!;
  token.attrSet("target", "_blank");
  token.attrSet("rel", "noopener noreferrer nofollow");
  return defaultLinkOpen(tokens, idx, options, env, self);
};

md.renderer.rules.fence = (tokens, idx) => {
  const token = tokens[idx]!;
  const lang = token.info.trim().split(/\s+/)[0] ?? "";
  const safeLang = md.utils.escapeHtml(lang.replace(/[^\w+#.-]/g, "").slice(0, 24));
  return (
    `<div class="code-block"><div class="code-block__bar"><span class="code-block__lang">${safeLang || "code"}</span>` +
    `<button type="button" class="code-block__copy" data-copy-code aria-label="Copy code">Copy</button></div>` +
    `<pre><code${safeLang ? ` class="language-${safeLang}"` : ""}>${md.utils.escapeHtml(token.content)}</code></pre></div>`
  );
};

/** Markdown → safe HTML (see the module comment). */
export function renderMarkdown(source: string): string {
  return md.render(source);
}

/**
 * For a container of rendered markdown: handles clicks on the code blocks' Copy buttons
 * (event delegation, since the HTML is not made of components).
 */
export function handleCodeCopy(event: MouseEvent): void {
  const button = (event.target as Element | null)?.closest?.("[data-copy-code]") as HTMLButtonElement | null;
  if (!button) return;
  const code = button.closest(".code-block")?.querySelector("code")?.textContent ?? "";
  void navigator.clipboard?.writeText(code).then(
    () => {
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = "Copy"), 1500);
    },
    () => {
      button.textContent = "Failed";
    },
  );
}
