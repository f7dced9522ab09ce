//! Everything that talks to the Huawei Cloud API: the data model, the
//! request signer, authentication, the client and the drift-safe scan.

pub mod auth;
pub mod client;
pub mod error;
pub mod model;
pub mod region;
pub mod scan;
pub mod signer;

pub use client::{Client, ClientSettings, Filter};
pub use error::{ApiError, ClientError};
