//! Everything that talks to the Huawei Cloud API: the data model, the
//! request signer, authentication, the client and the drift-safe scan.

pub mod model;
pub mod region;
pub mod signer;
