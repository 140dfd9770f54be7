// Shows what LibraGen Prompt Rewrite wrote (the prompt, then the backend and any warnings) in a
// read-only box on the node. The core frontend displays a node's ui "text" only for its own
// Preview Any node, so our node needs this small hook; the box is never saved in workflows.
// It also reads workflows saved before endpoints became server settings (see OLD_LAYOUT).
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

// The widget values of such a workflow, in order. The frontend fills widgets by position, so the
// three removed ones would shift every later value into the wrong widget; the node puts each
// value back by name instead, drops the removed ones (a URL, a model, a key variable, or a key
// pasted by mistake) and says so.
const OLD_LAYOUT = ["prompt", "backend", "style_guide", "labels", "endpoint_url", "endpoint_model", "api_key_env",
                    "llm", "timeout", "retries", "use_cache"];
const REMOVED = new Set(["endpoint_url", "endpoint_model", "api_key_env"]);
const NOTICE = "This workflow was saved with endpoint_url, endpoint_model and api_key_env, which are gone: " +
  "endpoints are now set up on the server and picked by name in endpoint (see docs/rewrite.md). " +
  "Those values were dropped; pick an endpoint and save the workflow again.";

function isOldLayout(values) {
  return Array.isArray(values) && values.length === OLD_LAYOUT.length && typeof values[4] === "string" &&
    typeof values[6] === "string" && typeof values[8] === "number" && typeof values[9] === "number" &&
    typeof values[10] === "boolean";
}

app.registerExtension({
  name: "LibraGen.PromptRewrite",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "LibraGenPromptRewrite") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const box = ComfyWidgets.STRING(this, "rewritten", ["STRING", { multiline: true }], app).widget;
      box.element.readOnly = true;
      box.serialize = false; // not in the saved workflow
      // nor in the prompt sent to the server: ComfyUI's cache keys include every input sent, so the
      // shown text would make the next run redo this node and everything after it (the sampler)
      box.options.serialize = false;
      return result;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info) {
      const result = onConfigure?.apply(this, arguments);
      if (!isOldLayout(info?.widgets_values)) return result;
      const saved = Object.fromEntries(OLD_LAYOUT.map((name, i) => [name, info.widgets_values[i]]));
      for (const w of this.widgets ?? []) {
        if (w.name === "endpoint") w.value = "(none)";
        else if (w.name in saved && !REMOVED.has(w.name)) w.value = saved[w.name];
      }
      // the input slots some frontends save for widgets
      if (this.inputs) this.inputs = this.inputs.filter((s) => !(REMOVED.has(s.widget?.name ?? s.name) && s.link == null));
      const box = this.widgets?.find((w) => w.name === "rewritten");
      if (box) box.value = NOTICE;
      console.warn(`LibraGen Prompt Rewrite (node ${this.id}): ${NOTICE}`);
      app.extensionManager?.toast?.add?.({ severity: "warn", summary: "LibraGen Prompt Rewrite", detail: NOTICE,
                                           life: 15000 });
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const box = this.widgets?.find((w) => w.name === "rewritten");
      if (box && Array.isArray(message?.text)) box.value = message.text.join("\n\n");
    };
  },
});
