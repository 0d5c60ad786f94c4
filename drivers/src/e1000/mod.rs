//! Intel 8254x ("e1000", the 82540EM QEMU and Bochs emulate): registers, legacy RX/TX descriptors, and a ring
//! layout that several kernels can share (the VT build's shared NIC, paper §3.6).
//!
//! Written here: no maintained no_std e1000 crate exists. The pure parts — descriptor checks, ring arithmetic,
//! the reclaim rule for a receive ring read by several sandboxes, the DMA region layout — are host-tested; the
//! register window ([`Regs`]) and the descriptor memory ([`DescMem`]) are the only code that touches the device.
//!
//! Sharing model: one receive ring, one transmit ring and their buffers live in a DMA region mapped into every
//! sharer. Each sharer keeps its own receive cursor in the region's control block and reads every frame the NIC
//! writes (early demultiplexing decides which are its own); a descriptor goes back to the NIC only when every
//! live sharer's cursor has passed it ([`reclaim_tail`]). Transmission and the tail moves are serialised by a
//! bakery lock over one claim per sharer ([`acquire`]), each writable only by its owner. With one sharer this
//! is an ordinary driver (the SMP build).

mod audit;
mod device;
mod lock;
mod regs;
mod ring;
#[cfg(test)]
mod tests;

pub use audit::*;
pub use device::*;
pub use lock::*;
pub use regs::*;
pub use ring::*;
