//! W3C trace context propagation on outgoing calls (feature `opentelemetry`, on by default):
//! the current `tracing` span's OpenTelemetry context goes out as `traceparent`, so the
//! auth-server's spans join the caller's trace. Without a global propagator installed by the
//! application (`opentelemetry::global::set_text_map_propagator`), nothing is added.

use tonic::metadata::MetadataMap;

#[cfg(feature = "opentelemetry")]
struct MetadataInjector<'a>(&'a mut MetadataMap);

#[cfg(feature = "opentelemetry")]
impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Adds the current span's trace context to `metadata`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn inject(metadata: &mut MetadataMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// Without the `opentelemetry` feature there is no trace context to send.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn inject(_metadata: &mut MetadataMap) {}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn the_current_span_goes_out_as_traceparent() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("caller");
            let _entered = span.enter();
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            let sent = metadata
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent sent");
            let trace_id = span.context().span().span_context().trace_id().to_string();
            assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
        });
    }
}
