//! `sql`: a pumphouse sink for SQL databases; `mysql` speaks the MySQL/MariaDB client protocol.

pub mod mysql;
