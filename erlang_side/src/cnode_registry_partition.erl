%% @doc A partition of a standalone cnode_registry (started by
%% cnode_registry_sup): the process that callers registering are linked to,
%% as Registry's partitions are. It traps exits, so a registered process that
%% dies does not take it along (the NIF monitors owners and removes their
%% entries).
%%
%% Partition 0 also holds the registry: it creates it in the NIF (the NIF
%% drops the name when it stops or dies) with its initial metadata, and the
%% partition table (cnode_registry_partitions). It purges owners that died
%% with many entries, which the NIF hands over as
%% {'$cnr_owner_down', Name, Pid} so that the purge runs in a dirty NIF rather
%% than on the scheduler that processed the exit. Tests:
%% tests/integration/nif_tests.erl,
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry_partition).
-behaviour(gen_server).

-export([start_link/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(st, {name :: atom(), index :: non_neg_integer()}).

%% @doc Starts partition I of the registry of Cfg, linked to the caller.
-spec start_link(non_neg_integer(), cnode_registry_opts:config()) ->
          {ok, pid()} | {error, term()}.
start_link(I, Cfg) ->
    gen_server:start_link(?MODULE, {I, Cfg}, []).

-spec init({non_neg_integer(), cnode_registry_opts:config()}) ->
          {ok, #st{}} | {stop, term()}.
init({I, #{name := Name, keys := Keys, partitions := Count} = Cfg}) ->
    process_flag(trap_exit, true),
    Created = case I of
                  0 -> create(Cfg);
                  _ -> ok
              end,
    case Created of
        {error, Reason} ->
            {stop, Reason};
        ok ->
            ok = cnode_registry_partitions:publish(Name, I, Count, Keys),
            {ok, #st{name = Name, index = I}}
    end.

create(#{name := Name, keys := Keys, listeners := Listeners, meta := Meta}) ->
    case create(Name, Keys, Listeners, 1) of
        ok ->
            [ok = cnode_registry_nif:put_meta(Name, K, V) || {K, V} <- Meta],
            ok;
        {error, _} = E ->
            E
    end.

%% A registry whose partition 0 was just killed may still hold the name for a
%% moment (the NIF drops it when the exit is processed).
create(Name, Keys, Listeners, Try) ->
    case cnode_registry_nif:new(Name, Keys, Listeners) of
        {error, exists} when Try < 100 ->
            Stale = try cnode_registry_nif:info(Name) of
                        #{server := S} -> not is_process_alive(S)
                    catch error:badarg -> true
                    end,
            case Stale of
                true ->
                    ok = cnode_registry_nif:drop(Name),
                    create(Name, Keys, Listeners, Try + 1);
                false ->
                    {error, {already_started, Name}}
            end;
        Other ->
            Other
    end.

-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, {error, unknown_call}, #st{}}.
handle_call(_Req, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

%% 'EXIT' of linked callers that ended: nothing to do (the NIF saw it too).
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({'$cnr_owner_down', Name, Pid}, St = #st{name = Name}) ->
    _ = cnode_registry_nif:remove_owner(Name, Pid),
    {noreply, St};
handle_info(_Msg, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Reason, #st{name = Name, index = 0}) ->
    ok = cnode_registry_partitions:unpublish(Name),
    cnode_registry_nif:drop(Name);
terminate(_Reason, #st{}) ->
    ok.
