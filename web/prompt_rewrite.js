// Shows what LibraGen Prompt Rewrite wrote (the prompt, then the backend and any warnings) in a
// read-only box on the node. The core frontend displays a node's ui "text" only for its own
// Preview Any node, so our node needs this small hook; the box is never saved in workflows.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

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
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const box = this.widgets?.find((w) => w.name === "rewritten");
      if (box && Array.isArray(message?.text)) box.value = message.text.join("\n\n");
    };
  },
});
