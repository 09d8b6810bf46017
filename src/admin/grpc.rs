//! `adminrpc.Admin` over gRPC (tonic's generated server): each RPC decodes Go's request,
//! checks it through [`super::api`], calls the [`AdminBackend`] and answers Go's message; a
//! backend error becomes the matching gRPC status. The macaroon is checked before a request
//! reaches this service (by the server's router, [`super::server`]); this module does no
//! authentication and no I/O of its own.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::api;
use super::backend::{AdminBackend, AdminError};
use super::proto as pb;

/// The gRPC path prefix and the one RPC that needs no macaroon (Go's `unauthenticatedMethods`).
pub const PATH_PREFIX: &str = "/adminrpc.Admin/";
pub const OPEN_PATH: &str = "/adminrpc.Admin/GetHealth";
/// The largest request message accepted (tonic's default is 4 MiB; the admin API's are tiny).
pub const MAX_MESSAGE: usize = 1 << 20;

/// The gRPC status of a backend error.
pub fn status(e: AdminError) -> Status {
    match e {
        AdminError::BadRequest(m) => Status::invalid_argument(m),
        AdminError::NotFound(m) => Status::not_found(m),
        AdminError::Conflict(m) => Status::already_exists(m),
        AdminError::Unavailable(m) => Status::unavailable(m),
        AdminError::Internal(m) => Status::internal(m),
    }
}

/// The tonic service over a backend.
pub struct GrpcAdmin {
    backend: Arc<dyn AdminBackend>,
}

/// tonic's generated server over `backend`, with the message size limit.
pub fn server(backend: Arc<dyn AdminBackend>) -> pb::admin_server::AdminServer<GrpcAdmin> {
    pb::admin_server::AdminServer::new(GrpcAdmin { backend }).max_decoding_message_size(MAX_MESSAGE)
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, AdminError>) -> Answer<T> {
    r.map(Response::new).map_err(status)
}

#[tonic::async_trait]
impl pb::admin_server::Admin for GrpcAdmin {
    async fn get_info(&self, _: Request<pb::GetInfoRequest>) -> Answer<pb::GetInfoResponse> {
        Ok(Response::new(api::info_pb(self.backend.info())))
    }

    async fn get_health(&self, _: Request<pb::GetHealthRequest>) -> Answer<pb::GetHealthResponse> {
        Ok(Response::new(pb::GetHealthResponse {
            status: "ok".into(),
        }))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Answer<pb::ListServicesResponse> {
        ok(self
            .backend
            .list_services()
            .map(|v| pb::ListServicesResponse {
                services: v.iter().map(api::service_pb).collect(),
            }))
    }

    async fn create_service(&self, req: Request<pb::CreateServiceRequest>) -> Answer<pb::Service> {
        ok(api::create_spec(req.into_inner(), api::Extra::new())
            .and_then(|spec| self.backend.create_service(spec))
            .map(|v| api::service_pb(&v)))
    }

    async fn update_service(&self, req: Request<pb::UpdateServiceRequest>) -> Answer<pb::Service> {
        ok(api::update_patch(req.into_inner(), api::Extra::new())
            .and_then(|(name, patch)| self.backend.update_service(&name, patch))
            .map(|v| api::service_pb(&v)))
    }

    async fn delete_service(
        &self,
        req: Request<pb::DeleteServiceRequest>,
    ) -> Answer<pb::DeleteServiceResponse> {
        ok(api::delete_name(req.into_inner())
            .and_then(|name| self.backend.delete_service(&name))
            .map(|()| pb::DeleteServiceResponse {
                status: "deleted".into(),
            }))
    }

    async fn list_transactions(
        &self,
        req: Request<pb::ListTransactionsRequest>,
    ) -> Answer<pb::ListTransactionsResponse> {
        ok(api::tx_query(req.into_inner(), None)
            .and_then(|q| self.backend.list_transactions(q))
            .map(|p| pb::ListTransactionsResponse {
                transactions: p.transactions.iter().map(api::tx_pb).collect(),
                total_count: api::i64_of(p.total_count),
            }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Answer<pb::ListTokensResponse> {
        let req = req.into_inner();
        ok(api::page(req.limit, req.offset)
            .and_then(|(limit, offset)| self.backend.list_tokens(limit, offset))
            .map(|p| pb::ListTokensResponse {
                tokens: p.transactions.iter().map(api::tx_pb).collect(),
                total_count: api::i64_of(p.total_count),
            }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Answer<pb::RevokeTokenResponse> {
        ok(api::token_id(&req.into_inner().token_id)
            .and_then(|id| self.backend.revoke_token(id))
            .map(|()| pb::RevokeTokenResponse {
                status: "revoked".into(),
            }))
    }

    async fn get_stats(&self, req: Request<pb::GetStatsRequest>) -> Answer<pb::GetStatsResponse> {
        let req = req.into_inner();
        ok(api::stats_range(&req.from, &req.to)
            .and_then(|(from, to)| self.backend.stats(from, to))
            .map(|s| api::stats_pb(&s)))
    }
}
