//! Pure types and rules: no SQL, HTTP or SMTP here.

pub mod bounce;
pub mod clock;
pub mod delivery;
pub mod digest;
pub mod dmarc;
pub mod email;
pub mod id;
pub mod liveness;
pub mod markdown;
pub mod retry;
pub mod smtp;
pub mod spreadsheet;
pub mod subscriber;
pub mod test_send;
pub mod timezone;
pub mod token;

pub use delivery::{DeliveryKind, DeliveryStatus};
pub use digest::{
    DailySchedule, DeliverAt, DigestStatus, Invalid, ItemSelection, NewDigest, NewItem,
};
pub use email::{EmailAddress, EmailError};
pub use retry::RetryPolicy;
pub use subscriber::{SubscriberName, SubscriberStatus};
pub use token::{Token, TokenError};
