//! Assembles the parts from a validated `Config`: store, templates, transport, worker, HTTP.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::compose::Composer;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::mailer::Transport;
use crate::metrics::Metrics;
use crate::render::{RenderError, Renderer};
use crate::scheduler::Scheduler;
use crate::service::{Editor, Reporting, Signup, Subscribers};
use crate::store::{Store, StoreError};
use crate::worker::Worker;

/// Why the process could not start; `exit_code` follows DESIGN.md (2: fix the configuration).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("templates: {0}")]
    Templates(#[from] RenderError),
    #[error("outbox folder {path} cannot be created: {source}")]
    Outbox {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Templates(_) | Self::Outbox { .. } => 2,
            Self::Store(_) | Self::Metrics(_) => 1,
        }
    }
}

/// What a `serve` process runs besides HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub scheduler: bool,
    pub worker: bool,
}

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub renderer: Arc<Renderer>,
    pub transport: Transport,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Loads templates, prepares the outbox, opens and migrates the database.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let renderer = Arc::new(Renderer::load(&config.templates)?);
        let transport = Transport::from_config(&config);
        transport
            .prepare()
            .await
            .map_err(|source| StartError::Outbox {
                path: config.outbox.display().to_string(),
                source,
            })?;
        let store = Store::connect(&config.database_url, &config.database_kind).await?;
        store.migrate().await?;
        Ok(Self {
            config: Arc::new(config),
            store,
            renderer,
            transport,
            wake: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new()?),
        })
    }

    /// Closes the database pool: what a process does last.
    pub async fn close(&self) {
        self.store.close().await;
    }

    pub fn composer(&self) -> Composer {
        Composer::new(self.renderer.clone(), self.config.clone())
    }

    pub fn editor(&self) -> Editor {
        Editor::new(self.store.clone(), self.composer())
    }

    pub fn subscribers(&self) -> Subscribers {
        Subscribers::new(self.store.clone())
    }

    pub fn signup(&self) -> Signup {
        Signup::new(self.store.clone(), self.wake.clone())
    }

    pub fn reporting(&self) -> Reporting {
        Reporting::new(self.store.clone(), self.metrics.clone())
    }

    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(
            self.store.clone(),
            self.composer().list_name().to_owned(),
            self.config.missed_grace,
            self.config.digest_ttl,
        )
    }

    pub fn worker(&self) -> Worker {
        Worker::new(
            self.store.clone(),
            self.composer(),
            self.transport.clone(),
            self.config.clone(),
            self.wake.clone(),
            self.metrics.clone(),
        )
    }

    pub fn state(&self) -> AppState {
        let composer = self.composer();
        let c = &self.config;
        let settings = http::Settings {
            admin_token: c.admin_token.clone(),
            metrics_token: c.metrics_token.clone(),
            secure_cookies: c.public_url.scheme() == "https",
            confirmation_valid_hours: c.confirmation_ttl.as_secs() / 3600,
            subscribe_per_minute: c.subscribe_per_minute,
        };
        let pages = http::Pages {
            renderer: self.renderer.clone(),
            list_name: composer.list_name().into(),
        };
        AppState::new(
            Editor::new(self.store.clone(), composer),
            self.subscribers(),
            self.signup(),
            self.reporting(),
            pages,
            settings,
        )
    }

    /// HTTP, plus the scheduler and worker where `roles` says so, until `shutdown`; all stop
    /// gracefully.
    pub async fn serve(
        &self,
        listener: TcpListener,
        roles: Roles,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let worker = roles
            .worker
            .then(|| tokio::spawn(self.worker().run(shutdown.clone())));
        let scheduler = roles
            .scheduler
            .then(|| tokio::spawn(self.scheduler().run(shutdown.clone())));
        info!(address = %listener.local_addr()?, public_url = %self.config.public_url, "listening");
        let served = http::serve(listener, self.state(), shutdown.clone()).await;
        shutdown.cancel();
        if let Some(s) = scheduler {
            s.await?;
        }
        if let Some(w) = worker {
            w.await??;
        }
        served?;
        Ok(())
    }
}
