/** The hand-programmed flannel node moved to the harness (the soak uses it too); tests keep importing it from here. */
export * from "../../src/harness/flannel-node.js";
