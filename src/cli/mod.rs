//! The CLI's subcommands that have grown beyond a few lines, one module each.

pub mod validate;
