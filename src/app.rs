//! Wiring the CLI's commands and `docent eval` share: the models a configuration names,
//! loaded behind their ports.

use std::sync::Arc;

use crate::config::{Config, RemoteLlm};
use crate::embed::{Embedder, MiniLm};
use crate::llm::remote::{RemoteConfig, RemoteGenerator};
use crate::llm::{Generator, LlamaConfig, LlamaGenerator};

/// The embedder the configuration names.
pub fn load_embedder(config: &Config) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(Arc::new(
        MiniLm::load(&config.embedder_dir())?.with_threads(config.threads),
    ))
}

/// The chat model: the remote engines `--llm-url` names, else the GGUF in-process with
/// `parallel` sequences (one for the CLI, `--parallel` for `serve`).
pub fn load_generator(config: &Config, parallel: usize) -> anyhow::Result<Arc<dyn Generator>> {
    if let Some(remote) = &config.llm {
        return Ok(Arc::new(RemoteGenerator::new(remote_config(
            remote,
            config.context_size,
        ))?));
    }
    Ok(Arc::new(LlamaGenerator::start(LlamaConfig {
        model_path: config.model_path.clone(),
        threads: config.threads,
        context_size: config.context_size,
        parallel,
    })?))
}

/// How many answers generate at once: the remote engines' share, else `--parallel`.
pub fn generation_slots(config: &Config) -> usize {
    config
        .llm
        .as_ref()
        .map_or(config.parallel, |l| l.concurrency)
}

fn remote_config(remote: &RemoteLlm, context_size: u32) -> RemoteConfig {
    RemoteConfig {
        urls: remote.urls.clone(),
        model: remote.model.clone(),
        api_key: remote.api_key.clone(),
        timeout: remote.timeout,
        concurrency: remote.concurrency,
        context_size: context_size as usize,
    }
}
