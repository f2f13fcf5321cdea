#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

/// Bindings of the WIT world `sdk`: the shared types and the host imports.
/// The export macros point the plugin's own bindings here.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sdk",
        additional_derives: [PartialEq, Eq],
    });
}

/// Bindings of the standard `wasi:tls` interface, for [`net`]. Its
/// `wasi:io` types are `wasip2`'s, so the streams of a `wasi:sockets`
/// connection pass straight into a TLS handshake.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __tls {
    wit_bindgen::generate!({
        path: "wit-net",
        world: "tls",
        features: ["tls"],
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:tls/types@0.2.0-draft": generate,
        },
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use __bindings::pumphouse::plugin::host::{Label, Level};
pub use __bindings::pumphouse::plugin::types::{
    Batch, Encoding, Event, FailedEvent, PluginInfo, Schema, Verdict, WriteError,
};

/// Exports a [`Sink`] implementation as the plugin's `pump-sink` world.
///
/// Use it once per plugin crate, at module level:
/// `pumphouse_sdk::export_sink!(MySink);`. The crate must depend on this
/// SDK under its own name, `pumphouse_sdk`.
pub use pumphouse_sdk_macros::export_sink;

/// Exports a [`Filter`] implementation as the plugin's `pump-filter` world.
///
/// Use it once per plugin crate, at module level:
/// `pumphouse_sdk::export_filter!(MyFilter);`. The crate must depend on
/// this SDK under its own name, `pumphouse_sdk`.
pub use pumphouse_sdk_macros::export_filter;

pub use rmpv;
pub use serde_json;

mod batch;
mod capture;
pub mod config;
mod error;
mod msgpack;
mod path;
mod records;
mod timestamp;
mod value;

pub mod http;
pub mod kv;
pub mod log;
pub mod metrics;
pub mod net;
pub mod testing;

pub use batch::{Record, Records};
pub use config::Config;
pub use error::{Error, ErrorKind};
pub use path::{FieldPath, FieldSource};
pub use records::{City, Country, Geo, IamRecord, Latency, Location, Network, TykRecord};
pub use timestamp::{Timestamp, MSGPACK_TIMESTAMP_EXT};

/// A plugin that delivers batches somewhere.
///
/// The host creates one instance per pump worker: it calls [`Sink::info`],
/// then [`Sink::init`] once with the pump's configuration, then
/// [`Sink::write`] for every batch. Export it with
/// [`export_sink!`](crate::export_sink).
pub trait Sink: Sized + 'static {
    /// Describes the plugin; must not depend on configuration.
    fn info() -> PluginInfo;

    /// Creates the instance from the pump's configuration. An error fails
    /// the pump's start with its message.
    fn init(config: Config) -> Result<Self, Error>;

    /// Delivers a batch; `Ok` means every record was delivered. See the
    /// crate documentation for what the host does with each [`WriteError`].
    fn write(&mut self, batch: &Batch) -> Result<(), WriteError>;
}

/// A plugin that decides which records of a batch move on.
///
/// The host creates one instance per pump worker: it calls
/// [`Filter::info`], then [`Filter::init`] once with the pump's
/// configuration, then [`Filter::process`] for every batch. Export it with
/// [`export_filter!`](crate::export_filter).
pub trait Filter: Sized + 'static {
    /// Describes the plugin; must not depend on configuration.
    fn info() -> PluginInfo;

    /// Creates the instance from the pump's configuration. An error fails
    /// the pump's start with its message.
    fn init(config: Config) -> Result<Self, Error>;

    /// Decides which records go on. An error is treated like a trap: the
    /// host retries the batch with backoff.
    fn process(&mut self, batch: &Batch) -> Result<Verdict, Error>;
}

/// What the export macros call. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    use crate::{Batch, Config, Filter, PluginInfo, Sink, Verdict, WriteError};

    thread_local! {
        /// The instance `init` created; one per component instance.
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    fn install<T: 'static>(instance: T) {
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(instance)));
    }

    fn with_instance<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            slot.as_mut()?.downcast_mut::<T>().map(f)
        })
    }

    pub fn sink_describe<T: Sink>() -> PluginInfo {
        T::info()
    }

    pub fn sink_init<T: Sink>(config: String) -> Result<(), String> {
        install(T::init(Config::new(config)).map_err(|e| e.to_string())?);
        Ok(())
    }

    pub fn sink_write<T: Sink>(batch: Batch) -> Result<(), WriteError> {
        batch
            .validate()
            .map_err(|e| WriteError::InvalidBatch(e.to_string()))?;
        with_instance(|sink: &mut T| sink.write(&batch)).unwrap_or_else(|| {
            Err(WriteError::Fatal(
                "write called before a successful init".to_owned(),
            ))
        })
    }

    pub fn filter_describe<T: Filter>() -> PluginInfo {
        T::info()
    }

    pub fn filter_init<T: Filter>(config: String) -> Result<(), String> {
        install(T::init(Config::new(config)).map_err(|e| e.to_string())?);
        Ok(())
    }

    pub fn filter_process<T: Filter>(batch: Batch) -> Result<Verdict, String> {
        batch.validate().map_err(|e| e.to_string())?;
        with_instance(|filter: &mut T| filter.process(&batch).map_err(|e| e.to_string()))
            .unwrap_or_else(|| Err("process called before a successful init".to_owned()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::{testing, Encoding, Error, Schema};

        struct Counting(u32);

        impl Sink for Counting {
            fn info() -> PluginInfo {
                PluginInfo {
                    name: "counting".into(),
                    version: "0".into(),
                    accepts: Encoding::Json,
                }
            }
            fn init(config: Config) -> Result<Self, Error> {
                match config.raw() {
                    "fail" => Err(Error::fatal("no")),
                    _ => Ok(Counting(0)),
                }
            }
            fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
                self.0 += batch.len() as u32;
                Err(WriteError::Retry(self.0.to_string()))
            }
        }

        impl Filter for Counting {
            fn info() -> PluginInfo {
                <Self as Sink>::info()
            }
            fn init(config: Config) -> Result<Self, Error> {
                <Self as Sink>::init(config)
            }
            fn process(&mut self, _: &Batch) -> Result<Verdict, Error> {
                Ok(Verdict::KeepAll)
            }
        }

        #[test]
        fn calls_before_init_are_errors() {
            INSTANCE.with(|s| *s.borrow_mut() = None);
            let batch = testing::json_batch(&[serde_json::json!({})]);
            assert!(matches!(
                sink_write::<Counting>(batch.clone()),
                Err(WriteError::Fatal(_))
            ));
            assert!(filter_process::<Counting>(batch).is_err());
            assert_eq!(sink_init::<Counting>("fail".into()), Err("no".to_owned()));
            assert!(matches!(
                sink_write::<Counting>(Batch::new(Encoding::Json, Schema::Generic)),
                Err(WriteError::Fatal(_))
            ));
        }

        #[test]
        fn instance_state_persists_between_calls() {
            let batch = testing::json_batch(&[serde_json::json!({}), serde_json::json!({})]);
            sink_init::<Counting>(String::new()).unwrap();
            assert_eq!(
                sink_write::<Counting>(batch.clone()),
                Err(WriteError::Retry("2".into()))
            );
            assert_eq!(
                sink_write::<Counting>(batch.clone()),
                Err(WriteError::Retry("4".into()))
            );
            filter_init::<Counting>(String::new()).unwrap();
            assert_eq!(filter_process::<Counting>(batch), Ok(Verdict::KeepAll));
        }

        #[test]
        fn malformed_batches_are_rejected_before_the_plugin() {
            sink_init::<Counting>(String::new()).unwrap();
            let mut batch = testing::json_batch(&[serde_json::json!({})]);
            batch.events[0].len = 100;
            assert!(matches!(
                sink_write::<Counting>(batch.clone()),
                Err(WriteError::InvalidBatch(_))
            ));
            filter_init::<Counting>(String::new()).unwrap();
            assert!(filter_process::<Counting>(batch).is_err());
        }
    }
}
