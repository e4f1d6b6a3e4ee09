%% A plain gen_server for tests in which C calls Erlang: {echo, X} -> X;
%% {sleep, Ms, X} -> X after Ms (a reply that can arrive too late).
-module(cnb_test_server).
-behaviour(gen_server).
-export([start/1, init/1, handle_call/3, handle_cast/2]).

-spec start(atom()) -> {ok, pid()}.
start(Name) ->
    gen_server:start({local, Name}, ?MODULE, [], []).

-spec init([]) -> {ok, #{}}.
init([]) -> {ok, #{}}.

-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call({echo, X}, _From, S) -> {reply, X, S};
handle_call({sleep, Ms, X}, _From, S) -> timer:sleep(Ms), {reply, X, S}.

-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_, S) -> {noreply, S}.
