//! Keys and values on the wire: `SCAN` cursors over one server or over
//! every master of a cluster, and the batched reads of a batch of keys'
//! values (`MGET`, pipelined `GET`, `HGETALL`, `TYPE`, `JSON.GET`).
//!
//! `KEYS` is never sent: a batch holds what one `SCAN … COUNT` call
//! returned, so memory is bounded by the batch, never by the keyspace.

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use deadpool_redis::redis::{self, Cmd, Pipeline, RedisResult, ServerErrorKind, Value};
use ferry_shared::steps::redis_read::ValueType;

/// The `TYPE` of a RedisJSON document.
pub(super) const REJSON_TYPE: &str = "ReJSON-RL";

/// A connection steps read through.
pub(super) enum Conn {
    /// A pooled connection to the one server.
    Server(deadpool_redis::Connection),
    /// A pooled cluster connection; commands go to the master being scanned.
    Cluster(deadpool_redis::cluster::Connection),
}

/// Where a `SCAN` runs, and where the values of its keys are read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Node {
    /// The server of a single-server connector.
    Server,
    /// One master of a cluster, by the address the cluster announces.
    Master { host: String, port: u16 },
}

impl Node {
    fn routing(&self) -> Option<SingleNodeRoutingInfo> {
        match self {
            Node::Server => None,
            Node::Master { host, port } => Some(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            }),
        }
    }
}

/// What a key held when its value was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// A string (`string` and `json` values) or a RedisJSON document's
    /// JSON text.
    Value(Vec<u8>),
    /// A hash's fields and values, in the server's order.
    Fields(Vec<(Vec<u8>, Vec<u8>)>),
    /// Deleted (or expired) between the `SCAN` and the read.
    Gone,
    /// A key of a Redis type the step's `value_type` does not read.
    WrongType,
}

impl Conn {
    /// Runs one command on `node` (the server, or the named master).
    async fn command(&mut self, node: &Node, cmd: Cmd) -> RedisResult<Value> {
        match (self, node.routing()) {
            (Conn::Cluster(conn), Some(routing)) => conn
                .route_command(cmd, RoutingInfo::SingleNode(routing))
                .await?
                .extract_error(),
            (Conn::Cluster(conn), None) => conn.req_packed_command(&cmd).await?.extract_error(),
            (Conn::Server(conn), _) => conn.req_packed_command(&cmd).await?.extract_error(),
        }
    }

    /// Runs `pipe` on `node` in one round trip; each command's own server
    /// error is its item's `Err`. On a cluster, a command answered `MOVED`
    /// or `ASK` (its slot moved since the `SCAN`) is sent again where the
    /// cluster now serves the key.
    async fn pipeline(&mut self, node: &Node, pipe: &Pipeline) -> RedisResult<Vec<RedisResult<Value>>> {
        let count = pipe.len();
        let values = match (&mut *self, node.routing()) {
            (Conn::Cluster(conn), Some(routing)) => {
                conn.route_pipeline(pipe.clone(), 0, count, routing).await?
            }
            (Conn::Cluster(conn), None) => conn.req_packed_commands(pipe, 0, count).await?,
            (Conn::Server(conn), _) => conn.req_packed_commands(pipe, 0, count).await?,
        };
        let mut replies = Vec::with_capacity(values.len());
        for (value, cmd) in values.into_iter().zip(pipe.cmd_iter()) {
            let reply = match value {
                Value::ServerError(error)
                    if matches!(error.kind(), Some(ServerErrorKind::Moved | ServerErrorKind::Ask)) =>
                {
                    match self {
                        Conn::Cluster(conn) => {
                            conn.req_packed_command(cmd).await.and_then(Value::extract_error)
                        }
                        Conn::Server(_) => Err(error.into()),
                    }
                }
                Value::ServerError(error) => Err(error.into()),
                value => Ok(value),
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    /// One `SCAN cursor MATCH pattern COUNT count` on `node`: the next
    /// cursor (0 when done) and the keys of this call.
    pub(super) async fn scan(
        &mut self,
        node: &Node,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
        let reply = self.command(node, cmd).await?;
        parse_scan(reply).ok_or_else(|| unexpected("SCAN"))
    }

    /// The cluster's masters, from `CLUSTER SLOTS` (each once, in address
    /// order). A master announced without an address is `seed_host`, the
    /// address the connection was made to.
    pub(super) async fn masters(&mut self, seed_host: &str) -> RedisResult<Vec<Node>> {
        let Conn::Cluster(conn) = self else {
            return Ok(vec![Node::Server]);
        };
        let reply = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?
            .extract_error()?;
        let mut masters = parse_masters(reply, seed_host).ok_or_else(|| unexpected("CLUSTER SLOTS"))?;
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    /// The values of `keys` (found on `node`) as `value_type` reads them,
    /// one [`Found`] per key in order. Two round trips at most, three when
    /// some keys are not of the expected type: the values, then `TYPE` for
    /// the keys without one, then the values of RedisJSON documents (and
    /// of keys that became strings meanwhile).
    pub(super) async fn fetch(
        &mut self,
        node: &Node,
        value_type: ValueType,
        keys: &[Vec<u8>],
    ) -> RedisResult<Vec<Found>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match value_type {
            ValueType::Hash => {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("HGETALL").arg(key);
                }
                let replies = self.pipeline(node, &pipe).await?;
                replies.into_iter().map(hash_reply).collect()
            }
            ValueType::String | ValueType::Json => {
                let mut found = self.strings(node, keys).await?;
                let unsure: Vec<usize> = found
                    .iter()
                    .enumerate()
                    .filter(|(_, found)| matches!(found, Found::WrongType))
                    .map(|(index, _)| index)
                    .collect();
                if !unsure.is_empty() {
                    self.resolve(node, value_type, keys, &unsure, &mut found).await?;
                }
                Ok(found)
            }
        }
    }

    /// `MGET` on a server; pipelined `GET`s on a cluster master (its keys
    /// are in many slots, which one `MGET` may not span). A key without a
    /// string value comes back [`Found::WrongType`] for [`Self::resolve`]
    /// to look at (`MGET` answers nil both for a missing key and for
    /// another type).
    async fn strings(&mut self, node: &Node, keys: &[Vec<u8>]) -> RedisResult<Vec<Found>> {
        let replies = match node {
            Node::Server => {
                let mut cmd = redis::cmd("MGET");
                for key in keys {
                    cmd.arg(key);
                }
                match self.command(node, cmd).await? {
                    Value::Array(values) if values.len() == keys.len() => {
                        values.into_iter().map(Ok).collect::<Vec<_>>()
                    }
                    _ => return Err(unexpected("MGET")),
                }
            }
            Node::Master { .. } => {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("GET").arg(key);
                }
                self.pipeline(node, &pipe).await?
            }
        };
        replies
            .into_iter()
            .map(|reply| match reply {
                Ok(Value::BulkString(bytes)) => Ok(Found::Value(bytes)),
                Ok(Value::Nil) => Ok(Found::WrongType),
                Ok(_) => Err(unexpected("GET")),
                Err(error) if error.code() == Some("WRONGTYPE") => Ok(Found::WrongType),
                Err(error) => Err(error),
            })
            .collect()
    }

    /// Settles the keys at `unsure` (no string value): `TYPE` says whether
    /// each is gone, another type, or one to read again (a RedisJSON
    /// document for `json`, a string created since the first read).
    async fn resolve(
        &mut self,
        node: &Node,
        value_type: ValueType,
        keys: &[Vec<u8>],
        unsure: &[usize],
        found: &mut [Found],
    ) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for &index in unsure {
            pipe.cmd("TYPE").arg(&keys[index]);
        }
        let types = self.pipeline(node, &pipe).await?;
        let mut again = redis::pipe();
        let mut again_at = Vec::new();
        for (&index, reply) in unsure.iter().zip(types) {
            let word = match reply? {
                Value::SimpleString(word) => word,
                Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                _ => return Err(unexpected("TYPE")),
            };
            found[index] = match word.as_str() {
                "none" => Found::Gone,
                "string" => {
                    again.cmd("GET").arg(&keys[index]);
                    again_at.push(index);
                    Found::Gone
                }
                REJSON_TYPE if value_type == ValueType::Json => {
                    again.cmd("JSON.GET").arg(&keys[index]);
                    again_at.push(index);
                    Found::Gone
                }
                _ => Found::WrongType,
            };
        }
        if again_at.is_empty() {
            return Ok(());
        }
        let replies = self.pipeline(node, &again).await?;
        for (index, reply) in again_at.into_iter().zip(replies) {
            found[index] = match reply {
                Ok(Value::BulkString(bytes)) => Found::Value(bytes),
                Ok(Value::Nil) => Found::Gone,
                Ok(_) => return Err(unexpected("GET")),
                Err(error) if error.code() == Some("WRONGTYPE") => Found::WrongType,
                Err(error) => return Err(error),
            };
        }
        Ok(())
    }
}

/// An `HGETALL` reply: field/value pairs (a flat array in RESP2, a map in
/// RESP3); none means the key is gone (Redis deletes an emptied hash).
fn hash_reply(reply: RedisResult<Value>) -> RedisResult<Found> {
    let bytes = |value: Value| match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        _ => Err(unexpected("HGETALL")),
    };
    match reply {
        Ok(Value::Array(items)) if items.is_empty() => Ok(Found::Gone),
        Ok(Value::Map(pairs)) if pairs.is_empty() => Ok(Found::Gone),
        Ok(Value::Array(items)) => {
            if items.len() % 2 != 0 {
                return Err(unexpected("HGETALL"));
            }
            let mut fields = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(field), Some(value)) = (items.next(), items.next()) {
                fields.push((bytes(field)?, bytes(value)?));
            }
            Ok(Found::Fields(fields))
        }
        Ok(Value::Map(pairs)) => pairs
            .into_iter()
            .map(|(field, value)| Ok((bytes(field)?, bytes(value)?)))
            .collect::<RedisResult<_>>()
            .map(Found::Fields),
        Ok(_) => Err(unexpected("HGETALL")),
        Err(error) if error.code() == Some("WRONGTYPE") => Ok(Found::WrongType),
        Err(error) => Err(error),
    }
}

/// `[cursor, [key, …]]`.
fn parse_scan(reply: Value) -> Option<(u64, Vec<Vec<u8>>)> {
    let Value::Array(mut parts) = reply else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let keys = parts.pop()?;
    let cursor = match parts.pop()? {
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok()?,
        Value::SimpleString(text) => text.parse().ok()?,
        Value::Int(number) => u64::try_from(number).ok()?,
        _ => return None,
    };
    let Value::Array(keys) = keys else {
        return None;
    };
    let keys = keys
        .into_iter()
        .map(|key| match key {
            Value::BulkString(bytes) => Some(bytes),
            Value::SimpleString(text) => Some(text.into_bytes()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((cursor, keys))
}

/// The master of each slot range of a `CLUSTER SLOTS` reply:
/// `[[start, end, [host, port, id, …], replica…], …]`.
fn parse_masters(reply: Value, seed_host: &str) -> Option<Vec<Node>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges
        .into_iter()
        .map(|range| {
            let Value::Array(range) = range else {
                return None;
            };
            let Some(Value::Array(master)) = range.into_iter().nth(2) else {
                return None;
            };
            let mut master = master.into_iter();
            let host = match master.next()? {
                Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
                Value::SimpleString(text) => text,
                Value::Nil => String::new(),
                _ => return None,
            };
            let port = match master.next()? {
                Value::Int(port) => u16::try_from(port).ok()?,
                _ => return None,
            };
            let host = if host.is_empty() || host == "?" {
                seed_host.to_owned()
            } else {
                host
            };
            Some(Node::Master { host, port })
        })
        .collect()
}

fn unexpected(command: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        command.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn scan_replies_give_the_cursor_and_the_keys() {
        let reply = Value::Array(vec![bulk("17"), Value::Array(vec![bulk("a"), bulk("b")])]);
        assert_eq!(parse_scan(reply), Some((17, vec![b"a".to_vec(), b"b".to_vec()])));
        assert_eq!(parse_scan(Value::Array(vec![bulk("0")])), None);
    }

    #[test]
    fn cluster_slots_name_each_ranges_master() {
        let node = |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.9", 7009),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("", 7001)]),
        ]);
        assert_eq!(
            parse_masters(reply, "seed.example"),
            Some(vec![
                Node::Master {
                    host: "10.0.0.1".into(),
                    port: 7000
                },
                Node::Master {
                    host: "seed.example".into(),
                    port: 7001
                },
            ])
        );
    }

    #[test]
    fn hgetall_replies_pair_fields_and_values() {
        let reply = Value::Array(vec![bulk("f"), bulk("1"), bulk("g"), bulk("2")]);
        assert_eq!(
            hash_reply(Ok(reply)).expect("a hash"),
            Found::Fields(vec![
                (b"f".to_vec(), b"1".to_vec()),
                (b"g".to_vec(), b"2".to_vec())
            ])
        );
        assert_eq!(hash_reply(Ok(Value::Array(vec![]))).expect("gone"), Found::Gone);
        assert!(hash_reply(Ok(Value::Array(vec![bulk("f")]))).is_err());
    }
}
