//! Squeeze: a newsletter delivery pipeline. See DESIGN.md for the architecture.

pub mod app;
pub mod cli;
pub mod compose;
pub mod config;
pub mod doctor;
pub mod domain;
pub mod feeds;
pub mod http;
pub mod inbound;
pub mod mail;
pub mod metrics;
pub mod render;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod worker;
