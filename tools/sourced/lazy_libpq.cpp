// libpq for the `sourced` tool, loaded on first use. libpq and what it pulls in (OpenSSL, GnuTLS, Kerberos,
// LDAP: ~20 libraries) cost ~7 ms of every process start to load and relocate, more than the rest of a
// 1,000-event append to SQLite, and a SQLite user never calls it. The tool links these definitions
// instead of libpq (with --as-needed, libpq is then not a dependency of the binary): each forwards to the
// function of the same name in libpq.so.5, opened by the first call, which is a PostgreSQL store's connect.
//
// The PostgreSQL engine may call a libpq function not listed here: the binary then links libpq as before
// (correct, only slower to start) and the test Cli.ASqliteCommandDoesNotLoadLibpq fails, naming the fix:
// add the function below. Thread-safe (the library is opened once, under a function-local static).

#include <dlfcn.h>
#include <fmt/format.h>
#include <libpq-fe.h>

#include "sourced/error.hpp"

namespace {

// libpq's soname has been libpq.so.5 since PostgreSQL 8.2.
constexpr const char* kLibpq = "libpq.so.5";

void* libpq() {
  static void* handle = [] {
    void* h = dlopen(kLibpq, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* why = dlerror();
      throw sourced::StorageError(
          fmt::format("PostgreSQL stores need libpq ({}), which could not be loaded: {}", kLibpq, why ? why : "?"));
    }
    return h;
  }();
  return handle;
}

template <class F>
F resolve(const char* name) {
  void* f = dlsym(libpq(), name);
  if (!f) throw sourced::StorageError(fmt::format("{} has no function {}: a libpq too old for sourced", kLibpq, name));
  return reinterpret_cast<F>(f);
}

}  // namespace

// The pointer is resolved once per function; the declaration in libpq-fe.h checks each signature.
#define SOURCED_PQ_FORWARD(name, ...)                                    \
  static const auto fn = resolve<decltype(&::name)>(#name); /* NOLINT */ \
  return fn(__VA_ARGS__)

extern "C" {

PGconn* PQconnectdbParams(const char* const* keywords, const char* const* values, int expand_dbname) {
  SOURCED_PQ_FORWARD(PQconnectdbParams, keywords, values, expand_dbname);
}
PGconn* PQconnectdb(const char* conninfo) { SOURCED_PQ_FORWARD(PQconnectdb, conninfo); }
void PQfinish(PGconn* conn) { SOURCED_PQ_FORWARD(PQfinish, conn); }
void PQreset(PGconn* conn) { SOURCED_PQ_FORWARD(PQreset, conn); }
PQconninfoOption* PQconninfoParse(const char* conninfo, char** errmsg) {
  SOURCED_PQ_FORWARD(PQconninfoParse, conninfo, errmsg);
}
void PQconninfoFree(PQconninfoOption* options) { SOURCED_PQ_FORWARD(PQconninfoFree, options); }
ConnStatusType PQstatus(const PGconn* conn) { SOURCED_PQ_FORWARD(PQstatus, conn); }
PGTransactionStatusType PQtransactionStatus(const PGconn* conn) { SOURCED_PQ_FORWARD(PQtransactionStatus, conn); }
const char* PQparameterStatus(const PGconn* conn, const char* name) {
  SOURCED_PQ_FORWARD(PQparameterStatus, conn, name);
}
int PQserverVersion(const PGconn* conn) { SOURCED_PQ_FORWARD(PQserverVersion, conn); }
char* PQerrorMessage(const PGconn* conn) { SOURCED_PQ_FORWARD(PQerrorMessage, conn); }
int PQsocket(const PGconn* conn) { SOURCED_PQ_FORWARD(PQsocket, conn); }
int PQbackendPID(const PGconn* conn) { SOURCED_PQ_FORWARD(PQbackendPID, conn); }
PQnoticeProcessor PQsetNoticeProcessor(PGconn* conn, PQnoticeProcessor proc, void* arg) {
  SOURCED_PQ_FORWARD(PQsetNoticeProcessor, conn, proc, arg);
}

PGresult* PQexec(PGconn* conn, const char* query) { SOURCED_PQ_FORWARD(PQexec, conn, query); }
PGresult* PQexecParams(PGconn* conn, const char* command, int n, const Oid* types, const char* const* values,
                       const int* lengths, const int* formats, int result_format) {
  SOURCED_PQ_FORWARD(PQexecParams, conn, command, n, types, values, lengths, formats, result_format);
}
PGresult* PQprepare(PGconn* conn, const char* name, const char* query, int n, const Oid* types) {
  SOURCED_PQ_FORWARD(PQprepare, conn, name, query, n, types);
}
PGresult* PQexecPrepared(PGconn* conn, const char* name, int n, const char* const* values, const int* lengths,
                         const int* formats, int result_format) {
  SOURCED_PQ_FORWARD(PQexecPrepared, conn, name, n, values, lengths, formats, result_format);
}
int PQsendQuery(PGconn* conn, const char* query) { SOURCED_PQ_FORWARD(PQsendQuery, conn, query); }
int PQsendQueryParams(PGconn* conn, const char* command, int n, const Oid* types, const char* const* values,
                      const int* lengths, const int* formats, int result_format) {
  SOURCED_PQ_FORWARD(PQsendQueryParams, conn, command, n, types, values, lengths, formats, result_format);
}
int PQsendPrepare(PGconn* conn, const char* name, const char* query, int n, const Oid* types) {
  SOURCED_PQ_FORWARD(PQsendPrepare, conn, name, query, n, types);
}
int PQsendQueryPrepared(PGconn* conn, const char* name, int n, const char* const* values, const int* lengths,
                        const int* formats, int result_format) {
  SOURCED_PQ_FORWARD(PQsendQueryPrepared, conn, name, n, values, lengths, formats, result_format);
}
PGresult* PQgetResult(PGconn* conn) { SOURCED_PQ_FORWARD(PQgetResult, conn); }
int PQisBusy(PGconn* conn) { SOURCED_PQ_FORWARD(PQisBusy, conn); }
int PQconsumeInput(PGconn* conn) { SOURCED_PQ_FORWARD(PQconsumeInput, conn); }
int PQflush(PGconn* conn) { SOURCED_PQ_FORWARD(PQflush, conn); }
int PQsetnonblocking(PGconn* conn, int arg) { SOURCED_PQ_FORWARD(PQsetnonblocking, conn, arg); }
int PQsetSingleRowMode(PGconn* conn) { SOURCED_PQ_FORWARD(PQsetSingleRowMode, conn); }
int PQenterPipelineMode(PGconn* conn) { SOURCED_PQ_FORWARD(PQenterPipelineMode, conn); }
int PQexitPipelineMode(PGconn* conn) { SOURCED_PQ_FORWARD(PQexitPipelineMode, conn); }
int PQpipelineSync(PGconn* conn) { SOURCED_PQ_FORWARD(PQpipelineSync, conn); }
PGpipelineStatus PQpipelineStatus(const PGconn* conn) { SOURCED_PQ_FORWARD(PQpipelineStatus, conn); }
PGnotify* PQnotifies(PGconn* conn) { SOURCED_PQ_FORWARD(PQnotifies, conn); }
int PQputCopyData(PGconn* conn, const char* buffer, int nbytes) {
  SOURCED_PQ_FORWARD(PQputCopyData, conn, buffer, nbytes);
}
int PQputCopyEnd(PGconn* conn, const char* errormsg) { SOURCED_PQ_FORWARD(PQputCopyEnd, conn, errormsg); }
int PQgetCopyData(PGconn* conn, char** buffer, int async) { SOURCED_PQ_FORWARD(PQgetCopyData, conn, buffer, async); }

ExecStatusType PQresultStatus(const PGresult* res) { SOURCED_PQ_FORWARD(PQresultStatus, res); }
char* PQresStatus(ExecStatusType status) { SOURCED_PQ_FORWARD(PQresStatus, status); }
char* PQresultErrorMessage(const PGresult* res) { SOURCED_PQ_FORWARD(PQresultErrorMessage, res); }
char* PQresultErrorField(const PGresult* res, int fieldcode) { SOURCED_PQ_FORWARD(PQresultErrorField, res, fieldcode); }
int PQntuples(const PGresult* res) { SOURCED_PQ_FORWARD(PQntuples, res); }
int PQnfields(const PGresult* res) { SOURCED_PQ_FORWARD(PQnfields, res); }
char* PQfname(const PGresult* res, int field) { SOURCED_PQ_FORWARD(PQfname, res, field); }
int PQfnumber(const PGresult* res, const char* name) { SOURCED_PQ_FORWARD(PQfnumber, res, name); }
Oid PQftype(const PGresult* res, int field) { SOURCED_PQ_FORWARD(PQftype, res, field); }
char* PQgetvalue(const PGresult* res, int row, int field) { SOURCED_PQ_FORWARD(PQgetvalue, res, row, field); }
int PQgetlength(const PGresult* res, int row, int field) { SOURCED_PQ_FORWARD(PQgetlength, res, row, field); }
int PQgetisnull(const PGresult* res, int row, int field) { SOURCED_PQ_FORWARD(PQgetisnull, res, row, field); }
char* PQcmdStatus(PGresult* res) { SOURCED_PQ_FORWARD(PQcmdStatus, res); }
char* PQcmdTuples(PGresult* res) { SOURCED_PQ_FORWARD(PQcmdTuples, res); }
void PQclear(PGresult* res) { SOURCED_PQ_FORWARD(PQclear, res); }

void PQfreemem(void* ptr) { SOURCED_PQ_FORWARD(PQfreemem, ptr); }
char* PQescapeLiteral(PGconn* conn, const char* str, size_t len) {
  SOURCED_PQ_FORWARD(PQescapeLiteral, conn, str, len);
}
char* PQescapeIdentifier(PGconn* conn, const char* str, size_t len) {
  SOURCED_PQ_FORWARD(PQescapeIdentifier, conn, str, len);
}
unsigned char* PQescapeByteaConn(PGconn* conn, const unsigned char* from, size_t from_length, size_t* to_length) {
  SOURCED_PQ_FORWARD(PQescapeByteaConn, conn, from, from_length, to_length);
}
unsigned char* PQunescapeBytea(const unsigned char* text, size_t* length) {
  SOURCED_PQ_FORWARD(PQunescapeBytea, text, length);
}
PGcancel* PQgetCancel(PGconn* conn) { SOURCED_PQ_FORWARD(PQgetCancel, conn); }
int PQcancel(PGcancel* cancel, char* errbuf, int errbufsize) {
  SOURCED_PQ_FORWARD(PQcancel, cancel, errbuf, errbufsize);
}
void PQfreeCancel(PGcancel* cancel) { SOURCED_PQ_FORWARD(PQfreeCancel, cancel); }

}  // extern "C"
