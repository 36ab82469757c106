//! The binary's own metrics: which layers run in this process.

/// `braid_layer_up{layer}`: 1 while the layer runs, 0 once it has ended (a failed layer stops
/// the process, so this 0 is seen only when the process exports it before stopping; a process
/// that is gone shows as Prometheus's `up == 0`).
pub fn layer_up(layer: &str, up: bool) {
    metrics::gauge!("braid_layer_up", "layer" => layer.replace(' ', "_")).set(if up {
        1.0
    } else {
        0.0
    });
}
