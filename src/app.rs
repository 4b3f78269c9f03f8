//! Wiring the CLI's commands, `serve` and `docent eval` share: the models a configuration
//! names, loaded behind their ports, and retrieval over the in-process search.

use std::sync::Arc;

use crate::config::{Config, RemoteLlm};
use crate::embed::{Embedders, Embedding, IntoEmbedders, LocalModels, Tokenizer, WordPiece};
use crate::llm::{Generator, LlamaConfig, LlamaGenerator};
use crate::ports::{ContentStore, Storage};
use crate::remote::{EmbedConfig, PoolConfig, RemoteConfig, RemoteEmbedder, RemoteGenerator};
use crate::retrieval::Retriever;
use crate::search::InProcess;

/// The embedders the configuration names: the remote engines `--embed-url` names for
/// every bot (chunks still measured with MiniLM's tokenizer), else the in-process models,
/// `--embedder` for bots that name none.
pub fn load_embedders(config: &Config) -> anyhow::Result<Arc<Embedders>> {
    let Some(remote) = &config.embed else {
        let models = LocalModels {
            models_dir: config.models_dir.clone(),
            threads: config.threads,
        };
        return Ok(Arc::new(Embedders::local(models, config.embedder)?));
    };
    let tokenizer: Arc<dyn Tokenizer> = Arc::new(WordPiece::load(&config.embedder_dir())?);
    let embedder = RemoteEmbedder::new(
        EmbedConfig {
            engines: PoolConfig {
                urls: remote.urls.clone(),
                model: remote.model.clone(),
                api_key: remote.api_key.clone(),
                timeout: remote.timeout,
                concurrency: remote.concurrency,
            },
            batch: remote.batch,
        },
        tokenizer.clone(),
    )?;
    Ok(Arc::new(Embedders::fixed(Embedding {
        embedder: Arc::new(embedder),
        tokenizer,
    })))
}

/// The node's default embedding (`load_embedders`' for bots that name none).
pub fn load_embedding(config: &Config) -> anyhow::Result<Embedding> {
    Ok(load_embedders(config)?.default_embedding())
}

/// Retrieval over `store`'s content through the store's own search (pgvector and
/// full-text search in PostgreSQL), else the in-process one (HNSW and BM25), with queries
/// embedded by the embedder that serves each bot.
pub fn retriever(store: Arc<dyn ContentStore>, embedders: impl IntoEmbedders) -> Retriever {
    let search = store
        .own_search()
        .unwrap_or_else(|| Arc::new(InProcess::new(store.clone())));
    Retriever::new(store, search, embedders)
}

/// The store the configuration names: PostgreSQL at `store`, else the redb database in
/// the data folder.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    match &config.store {
        Some(url) => {
            let password = config.store_password.as_ref().map(|p| p.0.as_str());
            let pool = config.store_pool;
            Ok(Arc::new(crate::pg::PgStore::open_with(
                &url.0, password, pool,
            )?))
        }
        None => Ok(crate::store::open(&config.data_dir)?),
    }
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
        engines: PoolConfig {
            urls: remote.urls.clone(),
            model: remote.model.clone(),
            api_key: remote.api_key.clone(),
            timeout: remote.timeout,
            concurrency: remote.concurrency,
        },
        context_size: context_size as usize,
    }
}
