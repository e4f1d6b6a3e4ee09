%% @doc The process that owns a standalone cnode_registry (started by
%% cnode_registry:start_link/1): registered under the registry's name, it
%% creates the registry in the NIF and holds it; when it stops (or dies) the
%% NIF drops the name. Owners are monitored by the NIF itself; the server only
%% purges owners that died with many entries, which the NIF hands over as
%% {'$cnr_owner_down', Name, Pid} so that the purge runs in a dirty NIF rather
%% than on the scheduler that processed the exit. Tests:
%% tests/integration/nif_tests.erl.
-module(cnode_registry_server).
-behaviour(gen_server).

-export([start_link/4]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(st, {name :: atom()}).

%% @doc Starts the server of registry Name, linked to the caller.
-spec start_link(atom(), unique | duplicate, [atom()], [{atom() | tuple(), term()}]) ->
          {ok, pid()} | {error, term()}.
start_link(Name, Keys, Listeners, Meta) ->
    gen_server:start_link({local, Name}, ?MODULE, {Name, Keys, Listeners, Meta}, []).

-spec init({atom(), unique | duplicate, [atom()], [{atom() | tuple(), term()}]}) ->
          {ok, #st{}} | {stop, term()}.
init({Name, Keys, Listeners, Meta}) ->
    case create(Name, Keys, Listeners, 1) of
        ok ->
            [ok = cnode_registry:put_meta(Name, K, V) || {K, V} <- Meta],
            {ok, #st{name = Name}};
        {error, Reason} ->
            {stop, Reason}
    end.

%% A registry of a server that was just killed may still hold the name for a
%% moment (the NIF drops it when the server's exit is processed).
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

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({'$cnr_owner_down', Name, Pid}, St = #st{name = Name}) ->
    _ = cnode_registry_nif:remove_owner(Name, Pid),
    {noreply, St};
handle_info(_Msg, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Reason, #st{name = Name}) ->
    cnode_registry_nif:drop(Name).
