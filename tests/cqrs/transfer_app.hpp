#pragma once
// The test bank wired together: account and transfer repositories, a command bus, and the transfer
// process manager over one store. What the process manager tests and the transfer_worker process use.

#include <memory>
#include <string>

#include "cqrs/bank_domain.hpp"
#include "sourced/command_bus.hpp"
#include "sourced/process_manager.hpp"
#include "sourced/repository.hpp"

namespace sourced::testing::bank {

using TransferManager = ProcessManager<TransferProcess, TransferProcessEvents>;

struct TransferApp {
  explicit TransferApp(EventStore& s, ProcessManagerOptions options = {})
      : store(s),
        accounts(s, events()),
        transfers(s, transfer_events()),
        bus(make_bus(accounts, transfers)),
        manager(s, transfer_process_events(), bus, "transfers", TransferProcess{}, std::move(options)) {}

  static CommandBus make_bus(const Repository<Account, Events>& accounts,
                             const Repository<Transfer, TransferEvents>& transfers) {
    CommandBus b;
    b.register_handler<Open>(accounts);
    b.register_handler<Deposit>(accounts);
    b.register_handler<Withdraw>(accounts);
    b.register_handler<Close>(accounts);
    b.register_handler<RequestTransfer>(transfers);
    b.register_handler<RejectCredit>(transfers);
    b.register_handler<CompleteTransfer>(transfers);
    b.register_handler<CompensateTransfer>(transfers);
    b.register_handler<FailTransfer>(transfers);
    return b;
  }

  // Requests a transfer with command id `id` (its correlation id: the process manager's instance key).
  CommandResult request(const std::string& transfer, const std::string& from, const std::string& to, long amount,
                        const Uuid& id) {
    return bus.dispatch(RequestTransfer{transfer, from, to, amount}, {.command_id = id});
  }
  Transfer::Stage stage(const std::string& transfer) const {
    return transfers.load("transfer-" + transfer).state.stage;
  }
  long balance(const std::string& account) const { return accounts.load("account-" + account).state.balance; }

  EventStore& store;
  Repository<Account, Events> accounts;
  Repository<Transfer, TransferEvents> transfers;
  CommandBus bus;
  TransferManager manager;
};

}  // namespace sourced::testing::bank
