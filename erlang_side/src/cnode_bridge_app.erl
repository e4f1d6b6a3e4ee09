%% @doc The cnode_bridge application callback: starts the top supervisor.
-module(cnode_bridge_app).
-behaviour(application).

-export([start/2, stop/1]).

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    cnode_bridge_sup:start_link().

-spec stop(term()) -> ok.
stop(_State) ->
    ok.
