//! The embedders a node serves bots with: one fixed embedder (a remote engine's, or a
//! test's) for every bot, or the in-process models by name (`minilm`, `nomic`, `nomic-512`,
//! `nomic-256`), each loaded on first use; and which one a bot is searched, extended and
//! re-embedded with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Embedder, Embedding, MiniLm, Nomic, Tokenizer};
use crate::domain::{Bot, EmbedderChoice};

/// nomic-embed-text-v1.5's GGUF in the models folder (`make models-nomic`).
pub const NOMIC_GGUF: &str = "nomic-embed-text-v1.5.f16.gguf";

/// Where the in-process models are read from, and with how many threads they run.
#[derive(Debug, Clone)]
pub struct LocalModels {
    pub models_dir: PathBuf,
    pub threads: usize,
}

impl LocalModels {
    fn minilm_dir(&self) -> PathBuf {
        self.models_dir.join("all-MiniLM-L6-v2")
    }
}

/// An in-process embedder this node cannot run: its model files are missing or unreadable
/// (the cause is logged; the message names the fix, not the path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedder {choice} is not installed on this node (run `{fix}` where docent runs)")]
pub struct EmbedderNotInstalled {
    pub choice: EmbedderChoice,
    pub fix: &'static str,
}

impl EmbedderNotInstalled {
    fn new(choice: EmbedderChoice, cause: &anyhow::Error) -> EmbedderNotInstalled {
        tracing::warn!("embedder {choice} failed to load: {cause:#}");
        EmbedderNotInstalled {
            choice,
            fix: match choice {
                EmbedderChoice::MiniLm => "make models",
                EmbedderChoice::Nomic(_) => "make models-nomic",
            },
        }
    }
}

pub struct Embedders {
    default: EmbedderChoice,
    source: Source,
}

enum Source {
    /// Every bot is served by this one.
    Fixed(Embedding),
    /// By choice, loaded on first use (nomic's widths share one copy of its weights).
    Local {
        models: LocalModels,
        loaded: Mutex<HashMap<EmbedderChoice, Embedding>>,
        nomic: Mutex<Option<Nomic>>,
    },
}

impl Embedders {
    /// One embedder for every bot, whatever it asks for.
    pub fn fixed(embedding: impl Into<Embedding>) -> Embedders {
        Embedders {
            default: EmbedderChoice::default(),
            source: Source::Fixed(embedding.into()),
        }
    }

    /// The in-process models, `default` for bots that name none; `default` is loaded now,
    /// so a missing model fails at start rather than at the first crawl.
    pub fn local(models: LocalModels, default: EmbedderChoice) -> anyhow::Result<Embedders> {
        let embedders = Embedders {
            default,
            source: Source::Local {
                models,
                loaded: Mutex::new(HashMap::new()),
                nomic: Mutex::new(None),
            },
        };
        embedders.get(default)?;
        Ok(embedders)
    }

    /// The embedder bots get when they name none (a fixed embedder's: `minilm`).
    pub fn default_choice(&self) -> EmbedderChoice {
        self.default
    }

    /// The node's default embedding (loaded when the registry was made).
    pub fn default_embedding(&self) -> Embedding {
        self.get(self.default)
            .expect("the default embedder is loaded at start")
    }

    /// The embedding `choice` names, loading it now if it is the first use (blocking: call
    /// off the async runtime). A fixed registry answers with its one embedder.
    pub fn get(&self, choice: EmbedderChoice) -> anyhow::Result<Embedding> {
        let (models, loaded, nomic) = match &self.source {
            Source::Fixed(embedding) => return Ok(embedding.clone()),
            Source::Local {
                models,
                loaded,
                nomic,
            } => (models, loaded, nomic),
        };
        if let Some(found) = lock(loaded).get(&choice) {
            return Ok(found.clone());
        }
        let embedding = match choice {
            EmbedderChoice::MiniLm => MiniLm::load(&models.minilm_dir())
                .map(|model| Embedding::from(Arc::new(model.with_threads(models.threads)))),
            EmbedderChoice::Nomic(width) => {
                let mut base = lock(nomic);
                if base.is_none() {
                    let gguf = models.models_dir.join(NOMIC_GGUF);
                    *base = Nomic::load(&gguf, &models.minilm_dir(), 768)
                        .map(|model| Some(model.with_threads(models.threads)))
                        .map_err(|e| EmbedderNotInstalled::new(choice, &e))?;
                }
                let model = base.as_ref().expect("loaded above").at_width(width.dim())?;
                Ok(Embedding::from(Arc::new(model)))
            }
        }
        .map_err(|e| EmbedderNotInstalled::new(choice, &e))?;
        Ok(lock(loaded).entry(choice).or_insert(embedding).clone())
    }

    /// Whether a bot may ask for `choice` here: the reason when not (its model is not
    /// installed, or this node embeds every bot on a remote engine).
    pub fn offers(&self, choice: EmbedderChoice) -> Result<(), String> {
        match &self.source {
            Source::Fixed(_) => Err(format!(
                "this node embeds every bot with one engine (--embed-url), so a bot cannot \
                 choose {choice}"
            )),
            Source::Local { .. } => self.get(choice).map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    /// What searches and extends `bot` (the node's default for a bot not made yet): the
    /// embedder that made its vectors while it has any, else the one it wants. A bot whose
    /// vectors no in-process model made (a remote engine's) gets the default, which the
    /// caller's embedder check then refuses with its reason.
    pub fn for_bot(&self, bot: Option<&Bot>) -> anyhow::Result<Embedding> {
        let Some(bot) = bot else {
            return self.get(self.default);
        };
        let needed = bot.embedder_needed(self.default);
        self.get(EmbedderChoice::from_id(&needed).unwrap_or(self.default))
    }

    /// What `docent reindex` re-embeds `bot` with: the embedder it wants.
    pub fn for_reindex(&self, bot: &Bot) -> anyhow::Result<Embedding> {
        self.get(bot.wanted_embedder(self.default))
    }
}

/// What can serve as a node's embedders: a registry, or one embedding (with its
/// tokenizer) for every bot.
pub trait IntoEmbedders {
    fn into_embedders(self) -> Arc<Embedders>;
}

impl IntoEmbedders for Arc<Embedders> {
    fn into_embedders(self) -> Arc<Embedders> {
        self
    }
}

impl IntoEmbedders for Embedding {
    fn into_embedders(self) -> Arc<Embedders> {
        Arc::new(Embedders::fixed(self))
    }
}

impl<T: Embedder + Tokenizer + 'static> IntoEmbedders for Arc<T> {
    fn into_embedders(self) -> Arc<Embedders> {
        Embedding::from(self).into_embedders()
    }
}

/// A lock whose holder panicked is still usable: what it guards is only ever replaced whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
