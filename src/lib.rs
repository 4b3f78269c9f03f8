//! docent: a self-hosted RAG chatbot in one binary. Modules in reading order.

pub mod analytics;
pub mod app;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod embed;
pub mod engage;
pub mod eval;
pub mod events;
pub mod index;
pub mod ingest;
pub mod keys;
pub mod keyword;
pub mod llm;
pub mod ports;
pub mod remote;
pub mod retrieval;
pub mod retry;
pub mod search;
pub mod server;
pub mod services;
pub mod store;
pub mod telemetry;
