//! What goes into each email: the template context and the list headers, in one place for
//! the worker (real sends) and the editors' preview (a sample subscriber).

use std::sync::Arc;

use minijinja::{Value, context};

use crate::config::Config;
use crate::mailer::ListHeaders;
use crate::render::{RenderError, Rendered, Renderer};
use crate::store::DigestRow;

/// The sample subscriber a preview is rendered for.
pub const SAMPLE_NAME: &str = "Sample Subscriber";
pub const SAMPLE_EMAIL: &str = "subscriber@example.com";
const SAMPLE_TOKEN: &str = "sample-unsubscribe-token-for-previews-only";

#[derive(Clone)]
pub struct Composer {
    renderer: Arc<Renderer>,
    config: Arc<Config>,
    list_name: String,
}

/// A digest's content as a template value, built once per digest and shared by every email.
#[derive(Debug, Clone)]
pub struct DigestContent {
    pub id: String,
    value: Value,
}

impl DigestContent {
    pub fn new(d: &DigestRow) -> Self {
        let items: Vec<Value> = d
            .items
            .iter()
            .map(|i| {
                context! {
                    title => i.title,
                    url => i.url,
                    summary => i.summary,
                    source => i.source,
                }
            })
            .collect();
        Self {
            id: d.id.clone(),
            value: context! { subject => d.subject, intro => d.intro, items },
        }
    }
}

impl Composer {
    pub fn new(renderer: Arc<Renderer>, config: Arc<Config>) -> Self {
        let list_name = config
            .from
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Squeeze".to_owned());
        Self {
            renderer,
            config,
            list_name,
        }
    }

    /// The list's name as people see it: the From display name, or "Squeeze".
    pub fn list_name(&self) -> &str {
        &self.list_name
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    pub fn confirmation(&self, name: Option<&str>, token: &str) -> Result<Rendered, RenderError> {
        self.renderer.email(
            "confirmation",
            context! {
                list_name => self.list_name,
                name,
                confirm_url => self.config.link("/confirm", token),
                valid_hours => self.config.confirmation_ttl.as_secs() / 3600,
            },
        )
    }

    /// One subscriber's copy of a digest, with its one-click unsubscribe headers.
    pub fn digest(
        &self,
        content: &DigestContent,
        name: Option<&str>,
        unsubscribe_token: &str,
    ) -> Result<(Rendered, ListHeaders), RenderError> {
        let unsubscribe_url = self.config.link("/unsubscribe", unsubscribe_token);
        let rendered = self.renderer.email(
            "digest",
            context! {
                list_name => self.list_name,
                name,
                unsubscribe_url,
                ..content.value.clone()
            },
        )?;
        let list = ListHeaders {
            list_id: self.config.list_id.clone(),
            unsubscribe_url,
            unsubscribe_mailto: self.config.unsubscribe_mailto.clone(),
        };
        Ok((rendered, list))
    }

    /// Exactly what a subscriber would receive, for a sample subscriber. A template error
    /// surfaces here, with the template's name and line, before anything is scheduled.
    pub fn preview(&self, digest: &DigestRow) -> Result<(Rendered, ListHeaders), RenderError> {
        self.digest(&DigestContent::new(digest), Some(SAMPLE_NAME), SAMPLE_TOKEN)
    }
}
