//! Embeddings through the gateway: the upstream asked for floats, the
//! client answered in the encoding it asked for, and vectors of the wrong
//! length (a `dimensions` the server ignored) refused rather than relayed.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::super::call::Record;
use super::super::keys::VirtualKey;
use super::super::relay::read_capped;
use super::super::wire::{self, Protocol, Usage};
use super::{Answer, Gateway, GatewayError, Operation, protocol_of};

impl Gateway {
    /// Forwards an embeddings request (`one`: Ollama's older route, one
    /// prompt); returns the answer and its usage.
    pub(super) async fn forward_embed(
        self: &Arc<Self>,
        key: &VirtualKey,
        client: Protocol,
        one: bool,
        body: Value,
        record: &mut Record,
    ) -> Result<(Answer, Option<Usage>), GatewayError> {
        let embed = wire::read_embed(client, one, &body).map_err(GatewayError::BadRequest)?;
        record.log_request(key, &body);
        let estimate = embed.input.iter().map(|i| i.len() as u64).sum::<u64>().div_ceil(4).max(1);
        record.prompt_estimate = estimate;
        // Refused or not, a call counts against the key's limits.
        self.admit(key, &embed.model, estimate, record)?;
        if !key.allows_model(&embed.model) {
            return Err(GatewayError::ModelNotAllowed(embed.model));
        }
        let (upstream, response, _in_flight) = self
            .send(&embed.model, |protocol| Ok((Operation::Embed.route(protocol), wire::write_embed(protocol, &embed)?)))
            .await?;
        record.upstream = upstream.name.clone();
        record.model_served = true;
        let status = response.status();
        let refused_dimensions = |given: &str| GatewayError::DimensionsUnsupported {
            model: embed.model.clone(),
            dimensions: embed.dimensions.unwrap_or_default(),
            given: given.to_owned(),
        };
        if status.is_client_error() && embed.dimensions.is_some() {
            // vLLM refuses `dimensions` for a model that cannot shorten its vectors.
            return Err(refused_dimensions("it refused"));
        }
        if !status.is_success() {
            return Err(GatewayError::UpstreamRefused(status.as_u16()));
        }
        let bytes = read_capped(response).await.map_err(|_| GatewayError::Unavailable)?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| GatewayError::Unavailable)?;
        let (vectors, prompt_tokens) =
            wire::read_vectors(protocol_of(upstream.kind), &answer).ok_or(GatewayError::Unavailable)?;
        if let Some(wanted) = embed.dimensions
            && let Some(wrong) = vectors.iter().find(|v| v.len() as u64 != wanted)
        {
            return Err(refused_dimensions(&format!("it gave {} dimensions", wrong.len())));
        }
        let out = wire::write_vectors(&embed, vectors, prompt_tokens);
        let usage = Usage { prompt_tokens, completion_tokens: 0 };
        Ok((Answer::Whole(Bytes::from(out.to_string())), Some(usage)))
    }
}
