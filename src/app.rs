//! Assembles the parts from a validated `Config`: store, templates, transport, worker, HTTP.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::compose::{ComposeSettings, Composer};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::mail::Transport;
use crate::mail::dkim::Signer;
use crate::metrics::Metrics;
use crate::render::{RenderError, Renderer};
use crate::scheduler::Scheduler;
use crate::service::{Editor, Feeds, Reporting, Signup, Subscribers};
use crate::store::{Store, StoreError};
use crate::worker::{Worker, WorkerSettings};

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
    #[error("DKIM: {0}")]
    Dkim(String),
    #[error("feeds: {0}")]
    Feeds(String),
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        match self {
            // A database that cannot be opened (read-only, a server that refuses): fix the
            // URL, the permissions or the server.
            Self::Templates(_)
            | Self::Outbox { .. }
            | Self::Dkim(_)
            | Self::Store(StoreError::Open(_)) => 2,
            Self::Store(_) | Self::Metrics(_) | Self::Feeds(_) => 1,
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
    /// Signs every email when DKIM is configured.
    pub signer: Option<Signer>,
    feeds: Feeds,
}

impl App {
    /// Loads templates, prepares the outbox, opens and migrates the database.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let renderer = Arc::new(Renderer::load(&config.templates)?);
        let signer = config
            .dkim
            .as_ref()
            .map(Signer::new)
            .transpose()
            .map_err(StartError::Dkim)?;
        let transport = match &config.smtp {
            Some(settings) => Transport::smtp(settings.clone(), config.smtp_timeout),
            None => Transport::Outbox(config.outbox.clone()),
        };
        transport
            .prepare()
            .await
            .map_err(|source| StartError::Outbox {
                path: config.outbox.display().to_string(),
                source,
            })?;
        let store = Store::connect(&config.database_url, &config.database_kind).await?;
        store.migrate().await?;
        let feeds = Feeds::new(
            store.clone(),
            crate::feeds::FetchSettings {
                timeout: config.feed_timeout,
                max_bytes: config.feed_max_bytes,
                allow_private: config.feed_allow_private,
            },
            config.feed_interval,
        )
        .map_err(|e| StartError::Feeds(e.to_string()))?;
        let wake = store.wake();
        Ok(Self {
            feeds,
            config: Arc::new(config),
            store,
            renderer,
            transport,
            wake,
            metrics: Arc::new(Metrics::new()?),
            signer,
        })
    }

    /// Closes the database pool: what a process does last.
    pub async fn close(&self) {
        self.store.close().await;
    }

    pub fn composer(&self) -> Composer {
        Composer::new(self.renderer.clone(), compose_settings(&self.config))
    }

    pub fn editor(&self) -> Editor {
        Editor::new(self.store.clone(), self.composer())
    }

    pub fn subscribers(&self) -> Subscribers {
        Subscribers::new(self.store.clone()).with_import_max_bytes(self.config.import_max_bytes)
    }

    pub fn signup(&self) -> Signup {
        Signup::new(self.store.clone(), self.config.welcome)
    }

    /// Bounces and complaints heard after sending.
    pub fn inbound(&self) -> crate::service::Inbound {
        let c = &self.config;
        crate::service::Inbound::new(
            self.store.clone(),
            crate::service::InboundSettings {
                verp: c.bounce.clone(),
                complaint_pause_rate: c.complaint_pause_rate,
                complaint_pause_min: c.complaint_pause_min,
                policy_pause_rate: c.pause_threshold,
                policy_pause_min: i64::try_from(c.pause_window).unwrap_or(i64::MAX),
            },
        )
    }

    pub fn reporting(&self) -> Reporting {
        Reporting::new(self.store.clone(), self.metrics.clone())
    }

    /// The feeds use case (and the poller), built at start with the feed settings.
    pub fn feeds(&self) -> Feeds {
        self.feeds.clone()
    }

    /// The retention job (`delivery_retention`).
    pub fn retention(&self) -> crate::service::Retention {
        crate::service::Retention::new(
            self.store.clone(),
            self.metrics.clone(),
            self.config.delivery_retention,
        )
    }

    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(
            self.store.clone(),
            self.config.missed_grace,
            self.config.digest_ttl,
        )
        .with_fan_out_chunk(self.config.fanout_chunk.get())
    }

    pub fn worker(&self) -> Worker {
        Worker::new(
            self.store.clone(),
            self.composer(),
            self.transport.clone(),
            self.worker_settings(),
            self.wake.clone(),
            self.metrics.clone(),
        )
    }

    fn worker_settings(&self) -> WorkerSettings {
        let c = &self.config;
        WorkerSettings {
            from: c.from.clone(),
            concurrency: c.concurrency,
            rate: c.rate,
            burst: c.burst,
            domain_rates: c.domain_rates.clone(),
            throttle_cooldown: c.throttle_cooldown,
            retry: c.retry.clone(),
            pause_threshold: c.pause_threshold,
            pause_window: c.pause_window,
            lease: c.lease,
            shutdown_timeout: c.shutdown_timeout,
            confirmation_ttl: c.confirmation_ttl,
            signer: self.signer.clone(),
            verp: c.bounce.clone(),
        }
    }

    pub fn state(&self) -> AppState {
        let composer = self.composer();
        let c = &self.config;
        let settings = http::Settings {
            admin_token: c.admin_token.clone(),
            metrics_token: c.metrics_token.clone(),
            secure_cookies: c.public_url.scheme() == "https",
            confirmation_valid_for: crate::domain::clock::for_people(c.confirmation_ttl),
            public_origin: c.public_url.origin().ascii_serialization(),
            subscribe_per_minute: c.subscribe_per_minute,
        };
        let pages = http::Pages {
            renderer: self.renderer.clone(),
            list_name: composer.list_name().into(),
        };
        AppState::new(
            Editor::new(self.store.clone(), composer.clone()),
            crate::service::Archive::new(self.store.clone(), composer),
            self.feeds(),
            self.subscribers(),
            self.signup(),
            self.reporting(),
            pages,
            settings,
            crate::service::AdminSessions::new(self.store.clone()),
            self.inbound(),
            http::WebhookSettings {
                mailgun_signing_key: c.mailgun_signing_key.clone(),
                postmark: c.postmark_webhook.clone(),
                sendgrid: c.sendgrid_public_key.clone(),
                ses: (!c.ses_topic_arn.is_empty()).then(|| http::SesWebhook {
                    topics: c.ses_topic_arn.clone(),
                    cert_url_override: c.ses_sns_cert_url_override.clone(),
                    sns: crate::service::sns::Sns::new(),
                }),
            },
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
        // The feed poller and the retention job run where the scheduler does, and work only
        // while this node holds the scheduler role (on PostgreSQL one node of the installation: the advisory lock).
        let (leading, led) = tokio::sync::watch::channel(false);
        let scheduler = roles
            .scheduler
            .then(|| tokio::spawn(self.scheduler().with_leading(leading).run(shutdown.clone())));
        let retention = roles
            .scheduler
            .then(|| tokio::spawn(self.retention().run(shutdown.clone(), led.clone())));
        let poller = roles
            .scheduler
            .then(|| tokio::spawn(self.feeds().run(shutdown.clone(), led)));
        info!(address = %listener.local_addr()?, public_url = %self.config.public_url, "listening");
        let conns = http::Connections {
            header_timeout: self.config.http_header_timeout,
            idle_timeout: self.config.http_idle_timeout,
            max: self.config.http_max_connections.get(),
        };
        let served = http::serve(listener, self.state(), conns, shutdown.clone()).await;
        shutdown.cancel();
        if let Some(s) = scheduler {
            s.await?;
        }
        if let Some(p) = poller {
            p.await?;
        }
        if let Some(r) = retention {
            r.await?;
        }
        if let Some(w) = worker {
            w.await??;
        }
        served?;
        Ok(())
    }
}

/// What `compose` needs of the configuration.
fn compose_settings(c: &Config) -> ComposeSettings {
    ComposeSettings {
        list_name: c
            .from
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Squeeze".to_owned()),
        list_id: c.list_id.clone(),
        public_url: c.public_url.clone(),
        unsubscribe_mailto: c.unsubscribe_mailto.clone(),
        confirmation_ttl: c.confirmation_ttl,
        postal_address: c.postal_address.clone(),
        feedback_sender: c.from.email.domain().to_ascii_lowercase(),
        archive: c.archive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links in emails are the links the configuration makes, whatever the public URL.
    #[test]
    fn compose_settings_make_the_links_the_configuration_makes() {
        for public_url in [
            "https://news.example.com",
            "https://example.com/news/",
            "https://example.com/news?ref=mail",
            "https://example.com/news#top",
        ] {
            let config =
                Config::load(None, vec![("public_url".into(), public_url.into())]).expect("config");
            let settings = compose_settings(&config);
            for (path, token) in [("/confirm", "abc"), ("/unsubscribe", "a b&c")] {
                assert_eq!(settings.link(path, token), config.link(path, token));
            }
        }
        let named = Config::load(None, vec![("from".into(), "News <n@example.com>".into())])
            .expect("config");
        assert_eq!(compose_settings(&named).list_name, "News");
    }
}
