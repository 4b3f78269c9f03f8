//! Wiring the CLI's commands and `docent eval` share: the models a configuration names,
//! loaded behind their ports.

use std::sync::Arc;

use crate::config::Config;
use crate::embed::{Embedder, MiniLm};
use crate::llm::{LlamaConfig, LlamaGenerator};

/// The embedder the configuration names.
pub fn load_embedder(config: &Config) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(Arc::new(
        MiniLm::load(&config.embedder_dir())?.with_threads(config.threads),
    ))
}

/// The chat model with `parallel` sequences (one for the CLI, `--parallel` for `serve`).
pub fn load_generator(config: &Config, parallel: usize) -> anyhow::Result<LlamaGenerator> {
    LlamaGenerator::start(LlamaConfig {
        model_path: config.model_path.clone(),
        threads: config.threads,
        context_size: config.context_size,
        parallel,
    })
}
