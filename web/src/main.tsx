import { render } from "preact";
import "./styles/tokens.css";
import "./styles/base.css";
import "./styles/effects.css";
import "./styles/components.css";
import "./styles/layout.css";
import { App } from "./app";
import { restoreSession } from "./lib/session";
import { registerServiceWorker } from "./lib/sw";

restoreSession();
render(<App />, document.getElementById("app")!);
registerServiceWorker();
