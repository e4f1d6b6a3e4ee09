%% @doc The stubs of the cnode_registry NIF (nif/*.c, built into
%% priv/cnode_registry_nif.so). Nothing here is meant to be called directly:
%% use cnode_registry, which holds the documentation, specs and the parts
%% written in Erlang (match specs, listeners, attaching). Every function is
%% replaced when the library loads; until then each raises
%% {not_loaded, ...}. Tests: tests/integration/nif_tests.erl.
-module(cnode_registry_nif).

-export([new/3, attach/6, add_remote/4, drop/1, info/1,
         register/3, unregister/2, unregister_values/3, notify_unregister/2,
         lookup/2, lookup_many/2, values/3, keys/2, update_value/3, count/1,
         meta/2, put_meta/3, delete_meta/2, remove_node/3, canonical/1,
         lookup_open/3, lookup_next/2, remove_owner/2,
         scan/3, feed_head/1, feed_poll/3, os_pid_alive/1]).

-on_load(init/0).

%% erlang:nif_error/1 directly in each stub: Dialyzer then takes the specs as
%% given instead of inferring that the stubs never return.
-define(NOT_LOADED, erlang:nif_error({not_loaded, [{module, ?MODULE}, {line, ?LINE}]})).

-type name() :: atom().
-type kind() :: unique | duplicate.
-type remote() :: '$cnr_remote'.

-spec init() -> ok | {error, term()}.
init() ->
    Lib = filename:join(cnode_bridge:priv_dir(), "cnode_registry_nif"),
    erlang:load_nif(Lib, 0).

-spec new(name(), kind(), [atom()]) -> ok | {error, term()}.
new(_Name, _Kind, _Listeners) -> ?NOT_LOADED.

-spec attach(name(), binary(), [atom()], node(), binary(), non_neg_integer()) ->
          {ok, kind()} | {error, term()}.
attach(_Name, _Path, _Listeners, _CNode, _Node, _Creation) -> ?NOT_LOADED.

-spec add_remote(name(), kind(), [atom()], node()) -> ok | {error, term()}.
add_remote(_Name, _Kind, _Listeners, _CNode) -> ?NOT_LOADED.

-spec drop(name()) -> ok.
drop(_Name) -> ?NOT_LOADED.

-spec info(name()) -> #{kind := kind(), mode := private | shared | remote,
                        listeners := [atom()], server := pid(),
                        count := non_neg_integer(), cnode := node() | []}.
info(_Name) -> ?NOT_LOADED.

-spec register(name(), term(), term()) ->
          {ok, pid()} | {error, {already_registered, pid()}} | {error, atom()} | remote().
register(_Name, _Key, _Value) -> ?NOT_LOADED.

-spec unregister(name(), term()) -> ok | {error, atom()} | remote().
unregister(_Name, _Key) -> ?NOT_LOADED.

-spec unregister_values(name(), term(), [term()]) ->
          non_neg_integer() | {error, atom()} | remote().
unregister_values(_Name, _Key, _Values) -> ?NOT_LOADED.

-spec notify_unregister(name(), term()) -> ok | remote().
notify_unregister(_Name, _Key) -> ?NOT_LOADED.

-spec lookup(name(), term()) -> [{pid(), term()}] | remote().
lookup(_Name, _Key) -> ?NOT_LOADED.

-spec lookup_many(name(), [term()]) -> [[{pid(), term()}]] | remote().
lookup_many(_Name, _Keys) -> ?NOT_LOADED.

-spec values(name(), term(), pid()) -> [term()] | remote().
values(_Name, _Key, _Pid) -> ?NOT_LOADED.

-spec keys(name(), pid()) -> [term()] | remote().
keys(_Name, _Pid) -> ?NOT_LOADED.

-spec update_value(name(), term(), term()) -> ok | error | {error, atom()} | remote().
update_value(_Name, _Key, _Value) -> ?NOT_LOADED.

-spec count(name()) -> non_neg_integer() | remote().
count(_Name) -> ?NOT_LOADED.

-spec meta(name(), atom() | tuple()) -> {ok, term()} | error | remote().
meta(_Name, _Key) -> ?NOT_LOADED.

-spec put_meta(name(), atom() | tuple(), term()) -> ok | {error, atom()} | remote().
put_meta(_Name, _Key, _Value) -> ?NOT_LOADED.

-spec delete_meta(name(), atom() | tuple()) -> ok | {error, atom()} | remote().
delete_meta(_Name, _Key) -> ?NOT_LOADED.

-spec remove_node(name(), binary(), non_neg_integer()) ->
          non_neg_integer() | {error, atom()} | remote().
remove_node(_Name, _Node, _Creation) -> ?NOT_LOADED.

-spec canonical(term()) -> binary().
canonical(_Term) -> ?NOT_LOADED.

-spec lookup_open(name(), term(), pos_integer()) ->
          {[{pid(), term()}], done | reference()} | remote().
lookup_open(_Name, _Key, _Max) -> ?NOT_LOADED.

-spec lookup_next(reference(), pos_integer()) -> {[{pid(), term()}], done | reference()}.
lookup_next(_Snapshot, _Max) -> ?NOT_LOADED.

-spec remove_owner(name(), pid()) -> non_neg_integer() | {error, atom()}.
remove_owner(_Name, _Pid) -> ?NOT_LOADED.

-spec scan(name(), non_neg_integer(), pos_integer()) ->
          {[{term(), pid(), term()}], non_neg_integer() | done} | remote().
scan(_Name, _Cursor, _Max) -> ?NOT_LOADED.

-spec feed_head(name()) -> non_neg_integer().
feed_head(_Name) -> ?NOT_LOADED.

-spec feed_poll(name(), non_neg_integer(), non_neg_integer()) ->
          {[{register | update, term(), pid(), term()} | {unregister, term(), pid()}],
           non_neg_integer(), non_neg_integer()}.
feed_poll(_Name, _Seq, _Max) -> ?NOT_LOADED.


%% True while OS process OsPid runs; a zombie or a process already exiting
%% (killed, its sockets closing) is gone.
-spec os_pid_alive(integer()) -> boolean().
os_pid_alive(_OsPid) -> ?NOT_LOADED.
