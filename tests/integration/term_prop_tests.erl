%% term_prop_tests: property tests of core/term (cnb_term.h) against the real
%% BEAM. Random terms are encoded every way OTP 25 can (and several ways only
%% hand-made encoders do); the C checker (build/tests/tools/term_check, built by
%% `make c`) must turn each encoding into term_to_binary(T, [{minor_version, 2},
%% deterministic]) with one hash per term, order pairs as Erlang's `<`/`==` do,
%% and agree with binary_to_term/1 on which corrupted inputs are valid.
%%
%% Run: cd /work/main && mkdir -p build/itest &&
%%      erlc -o build/itest tests/integration/term_prop_tests.erl &&
%%      erl -noshell -pa build/itest -eval \
%%        'case eunit:test(term_prop_tests,[verbose]) of ok -> halt(0); _ -> halt(1) end.'
%% Environment: CNB_ROOT (repository root), CNB_PROP_SEED (repeat a run),
%% CNB_PROP_TERMS (number of terms, default 10000). A seed repeats a run only
%% with the same compiled module and the same CNB_PROP_TERMS: the order in
%% which a large map's pairs are listed (perturb/1 picks from it) follows the
%% hashes of its keys, and a fun's hash follows the module's checksum (erlc
%% +debug_info or not gives other terms from one seed).
-module(term_prop_tests).

-include_lib("eunit/include/eunit.hrl").

%% gen/1 is exported because one generated term is the external fun
%% ?MODULE:gen/1, which OTP 29 refuses to compile for a local function.
-export([gen/1]).

-define(DEFAULT_TERMS, 10000).
-define(MAX_DEPTH, 4).

%% ---- the tests -------------------------------------------------------------

canonical_test_() ->
    {timeout, 600, fun prop_canonical/0}.

compare_test_() ->
    {timeout, 300, fun prop_compare/0}.

corrupted_test_() ->
    {timeout, 300, fun prop_corrupted/0}.

edge_cases_test_() ->
    {timeout, 120, fun edge_cases/0}.

%% Every encoding of every term gives the canonical bytes and one hash.
prop_canonical() ->
    seed_rand(canonical),
    N = n_terms(),
    Terms = [gen(?MAX_DEPTH) || _ <- lists:seq(1, N)] ++ [F || {F, _} <- fun_env_pairs()],
    Cases = [{T, encodings(T)} || T <- Terms],
    NEnc = lists:sum([length(Es) || {_, Es} <- Cases]),
    io:format(user, "term_prop_tests: ~p terms, ~p encodings~n", [N, NEnc]),
    %% The hand-made encodings must mean T to OTP itself, else the test is wrong.
    BadAlt = [{T, E} || {T, Es} <- Cases, E <- Es, otp_view(E) =/= skip,
                        otp_view(E) =/= {ok, canonical(T)}],
    ?assertEqual([], lists:sublist(BadAlt, 5)),
    Lines = run_checker([], [E || {_, Es} <- Cases, E <- Es]),
    ?assertEqual(NEnc, length(Lines)),
    Failures = check_canonical(Cases, Lines, []),
    report(Failures),
    ?assertEqual(0, length(Failures)).

check_canonical([], [], Acc) ->
    lists:reverse(Acc);
check_canonical([{T, Es} | Rest], Lines, Acc) ->
    {Mine, More} = lists:split(length(Es), Lines),
    Want = canonical(T),
    Parsed = [parse_ok(L) || L <- Mine],
    Hashes = lists:usort([H || {ok, _, H} <- Parsed]),
    All = lists:zip(Es, Parsed),
    %% Not hd(Hashes) in the filter: a filter that is a guard expression
    %% fails quietly, so a term whose every encoding was refused passed.
    Bad = case {otp_release() >= 27 andalso has_zero_pair(T), Hashes} of
              {true, _} -> % 27+'s valid map with 0.0 and -0.0 keys: refused here
                  [{E, P} || {E, P} <- All, P =/= {error, <<"ERR CNB_EMALFORMED">>}];
              {false, [Hash]} -> [{E, P} || {E, P} <- All, P =/= {ok, Want, Hash}];
              {false, _} -> All % no encoding taken, or two hashes
          end,
    case Bad of
        [] -> check_canonical(Rest, More, Acc);
        _ -> check_canonical(Rest, More, [{T, Want, Bad} | Acc])
    end.

parse_ok(<<"OK ", Rest/binary>>) ->
    [Hex, Hash] = binary:split(Rest, <<" ">>),
    {ok, binary:decode_hex(Hex), Hash};
parse_ok(Line) ->
    {error, Line}.

%% cnb_term_compare agrees with Erlang's term order.
prop_compare() ->
    seed_rand(compare),
    N = max(2000, n_terms() div 2),
    Pairs = [gen_pair() || _ <- lists:seq(1, N)] ++ number_pairs() ++ fun_env_pairs(),
    Records = lists:append([[enc_any(A), enc_any(B)] || {A, B} <- Pairs]),
    Lines = run_checker(["--compare"], Records),
    ?assertEqual(length(Pairs), length(Lines)),
    Failures = [{A, B, Want, Got}
                || {{A, B}, Got} <- lists:zip(Pairs, Lines),
                   Want <- [erl_order(A, B)],
                   Got =/= <<"CMP ", (integer_to_binary(Want))/binary>>,
                   not newer_otp(A, B, Got),
                   not otp25_short_ref_map(A) andalso not otp25_short_ref_map(B)],
    io:format(user, "term_prop_tests: ~p compare pairs~n", [length(Pairs)]),
    report(Failures),
    ?assertEqual(0, length(Failures)).

erl_order(A, B) when A < B -> -1;
erl_order(A, B) when A == B -> 0;
erl_order(_, _) -> 1.

%% Corrupted encodings: valid for OTP exactly when valid for the checker, and
%% then with the same meaning.
prop_corrupted() ->
    seed_rand(corrupted),
    put(foreign_only, true),
    N = n_terms(),
    Inputs = [mutate(enc_any(gen(3))) || _ <- lists:seq(1, N)],
    erase(foreign_only),
    Lines = run_checker([], Inputs),
    ?assertEqual(N, length(Lines)),
    Results = [{B, otp_view(B), parse_ok(L)} || {B, L} <- lists:zip(Inputs, Lines),
                                               otp_view(B) =/= skip],
    Failures = [{B, Want, Got} || {B, Want, Got} <- Results, not agrees(Want, Got),
                                  not internal_atom_ref(B, Want, Got),
                                  not zero_word_ref(Want, Got),
                                  not newer_otp(B, Want, Got)],
    NOk = length([x || {_, {ok, _}, _} <- Results]),
    io:format(user, "term_prop_tests: ~p corrupted inputs (~p still valid)~n", [N, NOk]),
    report(Failures),
    ?assertEqual(0, length(Failures)).

%% A NEWER_REFERENCE_EXT with 0 id words: OTP 25 reads 4 bytes past it (and
%% counts them as used), so a corrupted input can end in such a ref plus 4
%% stray bytes and still pass binary_to_term; the checker rejects these refs
%% (see core/term_int.h). Only that pairing is excused: OTP ok with a 0-word
%% ref in its canonical form, ours CNB_EMALFORMED.
zero_word_ref({ok, Canon}, {error, <<"ERR CNB_EMALFORMED">>}) ->
    binary:match(Canon, <<90, 0, 0>>) =/= nomatch;
zero_word_ref(_, _) ->
    false.

%% Where binary_to_term/1 of OTP 27+ parts from OTP 25's, the checker keeps 25's
%% reading (the canonical form is 25's on every release; README, "OTP
%% releases"): a BIT_BINARY_EXT of 0 bytes (27+ refuse it, 25 and we read
%% <<>>), and a map with both 0.0 and -0.0 as keys (27+ keep them apart, 25
%% and we call them one key, so such a map is malformed; and for the same
%% reason 27+ order two maps that differ only in a 0.0/-0.0 key, we do not).
newer_otp(B, error, {ok, _, _}) ->
    otp_release() >= 27 andalso binary:match(B, <<77, 0:32>>) =/= nomatch;
newer_otp(_, {ok, Canon}, {error, <<"ERR CNB_EMALFORMED">>}) ->
    (otp_release() >= 27 andalso has_zero_pair(binary_to_term(Canon))) orelse
        big_arity(binary_to_term(Canon));
newer_otp(A, B, <<"ERR CNB_EMALFORMED">>) -> % a compare pair
    otp_release() >= 27 andalso (has_zero_pair(A) orelse has_zero_pair(B));
newer_otp(A, B, <<"CMP ", _/binary>>) -> % 27+ order a -0.0 key apart from 0.0
    otp_release() >= 27 andalso (zero_key(A) orelse zero_key(B));
newer_otp(_, _, _) ->
    false.

%% OTP 25's own bug (fixed by 27): a map of more than 32 keys hashes a key
%% that is another node's reference of 1 or 2 words from memory past the
%% reference's data, so the VM finds some such keys in their own map or not
%% from one call to the next (maps:is_key(K, M) false for K of maps:keys(M):
%% 1-10 of 40 such keys, varying, in a fresh VM on 25.2.3; 0 on 27 and 29)
%% and orders two such maps by the hashes it got. Its `<` on them is no
%% reference for the checker (the rare prop_compare failure on 25: seeds
%% 111824100 and others, two large maps holding short refs of other nodes).
otp25_short_ref_map(T) ->
    otp_release() < 27 andalso short_ref_map(T).

short_ref_map(T) ->
    deep_any(fun(M) -> is_map(M) andalso map_size(M) > 32 andalso
                           lists:any(fun short_foreign_ref/1, maps:keys(M)) end, T).

%% A reference of another node whose NEWER_REFERENCE_EXT holds 1 or 2 words.
short_foreign_ref(R) when is_reference(R), node(R) =/= node() ->
    case term_to_binary(R) of
        <<131, 90, Len:16, _/binary>> -> Len < 3;
        _ -> false
    end;
short_foreign_ref(_) ->
    false.

%% A fun made from an EXPORT_EXT of arity past 255, which the checker refuses
%% (edge_cases); a corrupted input may hold one.
big_arity(T) ->
    deep_any(fun(F) when is_function(F) ->
                     case term_to_binary(F) of
                         <<131, 113, _/binary>> = B ->
                             case binary:part(B, byte_size(B) - 5, 5) of
                                 <<98, A:32>> -> A > 255;
                                 _ -> false
                             end;
                         _ -> false
                     end;
                (_) -> false
             end, T).

broken_fun(T) ->
    deep_any(fun(F) -> is_function(F) andalso not is_atom(element(2, erlang:fun_info(F, module)))
             end, T).

%% A map with a -0.0 in a key (at any depth), anywhere in T.
zero_key(T) ->
    deep_any(fun(M) -> is_map(M) andalso lists:any(fun neg_zero_in/1, maps:keys(M)) end, T).

%% A -0.0 anywhere in a map key ([-0.0, X] orders apart from [0.0, X] on 27+;
%% only asked there, where =:= tells the zeros apart).
neg_zero_in(T) ->
    deep_any(fun(F) -> is_float(F) andalso F =:= neg_zero() end, T).

has_zero_pair(T) ->
    deep_any(fun(M) when is_map(M) ->
                     Ks = maps:keys(M),
                     lists:member(0.0, Ks) andalso lists:member(neg_zero(), Ks);
                (_) -> false
             end, T).

%% Whether Here holds for T or for any term inside it: map keys and values,
%% tuple elements, list cells and tails, and a local fun's free variables
%% (a -0.0 map key may hide in a closure).
deep_any(Here, T) ->
    Here(T) orelse lists:any(fun(C) -> deep_any(Here, C) end, inside(T)).

inside(M) when is_map(M) -> maps:to_list(M);
inside(T) when is_tuple(T) -> tuple_to_list(T);
inside(F) when is_function(F) -> fun_env(F);
inside([H | T]) -> [H, T];
inside(_) -> [].

%% The free variables of a local fun ([] for an external one).
fun_env(F) ->
    case erlang:fun_info(F, type) of
        {type, local} -> element(2, erlang:fun_info(F, env));
        {type, external} -> []
    end.

%% binary_to_term/1 of OTP 25 also takes the VM-internal tags 73 and 75 (an
%% index into its own atom table); the checker rejects them.
internal_atom_ref(B, {ok, _}, {error, _}) -> binary:match(B, [<<73>>, <<75>>]) =/= nomatch;
internal_atom_ref(_, _, _) -> false.

agrees({ok, Want}, {ok, Want, _}) -> true;
agrees(error, {error, _}) -> true;
agrees(_, _) -> false.

%% What OTP makes of an encoding: {ok, Canonical}, error, or skip for the
%% forms only the C side accepts (no version byte).
otp_view(<<131, _/binary>> = B) ->
    try binary_to_term(B, [used]) of
        {T, Used} when Used =:= byte_size(B) ->
            %% OTP 27.3 makes a fun with no module of an EXPORT_EXT of arity
            %% past 255 and crashes encoding it: such input counts as refused.
            case otp_release() =:= 27 andalso broken_fun(T) of
                true -> error;
                false -> {ok, canonical(T)}
            end;
        {_, _} -> error %% trailing bytes: cnb_term_canonical rejects them
    catch
        error:_ -> error
    end;
otp_view(_) ->
    skip.

%% Hand-picked inputs whose expected result was taken from OTP 25 itself.
edge_cases() ->
    A = atom_enc(<<"a@b">>),
    Cases =
        [<<131, 99, "1,5", 0:(28 * 8)>>,                              % comma radix
         <<131, 99, "1.5e-400", 0:(23 * 8)>>,                         % underflow: 0.0
         <<131, 99, "-1.5e-400", 0:(22 * 8)>>,                        % underflow: -0.0
         <<131, 99, "1.5e400", 0:(24 * 8)>>,                          % overflow: error
         <<131, 99, " 1.5", 0:(27 * 8)>>,
         <<131, 99, "1.5", 0, "garbage", 0:(20 * 8)>>,
         <<131, 108, 0:32, 97, 5>>,                                   % [] ++ 5
         <<131, 108, 1:32, 97, 5, 107, 1:16, 7>>,                     % [5 | "\a"]
         <<131, 108, 1:32, 100, 1:16, "a", 108, 1:32, 97, 1, 107, 0:16>>,
         <<131, 107, 0:16>>,
         <<131, 110, 3, 255, 1, 0, 0>>,                               % sign 255
         <<131, 110, 0, 1>>,
         <<131, 111, 0:32, 0>>,
         <<131, 77, 1:32, 3, 255>>,
         <<131, 77, 1:32, 8, 5>>,
         <<131, 77, 0:32, 0>>,
         <<131, 77, 1:32, 0, 5>>,
         <<131, 103, A/binary, 5:32, 6:32, 2>>,
         <<131, 103, A/binary, 5:32, 6:32, 7>>,
         <<131, 101, A/binary, 5:32, 2>>,
         <<131, 101, A/binary, 16#ffffffff:32, 2>>,
         <<131, 114, 0:16, A/binary, 2>>,
         <<131, 114, 5:16, A/binary, 2, 1:32, 2:32, 3:32, 4:32, 5:32>>,
         <<131, 90, 0:16, A/binary, 2:32>>,                           % OTP reads past it
         <<131, 104, 2, 90, 0:16, A/binary, 2:32, 97, 5>>,
         <<131, 90, 6:16, A/binary, 2:32, 1:32, 2:32, 3:32, 4:32, 5:32, 6:32>>,
         <<131, 102, A/binary, 16#ffffffff:32, 2>>,
         <<131, 89, A/binary, 16#0fffffff:32, 1:32>>,
         <<131, 89, A/binary, 16#10000000:32, 1:32>>,
         <<131, 120, A/binary, 5:64, 1:32>>,
         <<131, 113, 100, 1:16, "a", 100, 1:16, "b", 110, 5, 0, 0:32, 1>>, % arity 2^32
         <<131, 113, 100, 1:16, "a", 100, 1:16, "b", 98, -1:32>>,
         <<131, 113, 100, 1:16, "a", 100, 1:16, "b", 97, 255>>,
         <<131, 113, 100, 1:16, "a", 100, 1:16, "b", 110, 8, 0, 0:56, 8>>,
         <<131, 116, 2:32, 97, 1, 97, 2, 98, 1:32, 97, 3>>,            % duplicate key
         <<131, 116, 2:32, 70, 0:64, 97, 2, 70, 128, 0:56, 97, 3>>,    % 0.0 and -0.0
         <<131, 116, 2:32, 97, 2, 97, 2, 97, 1, 97, 3>>,
         <<131, 100, 256:16, (binary:copy(<<"a">>, 256))/binary>>,
         <<131, 118, 512:16, (binary:copy(<<195, 164>>, 256))/binary>>,
         <<131, 100, 255:16, (binary:copy(<<228>>, 255))/binary>>,
         <<131, 119, 3, 16#e0, 16#80, 16#80>>,
         <<131, 119, 3, 16#ed, 16#a0, 16#80>>,
         <<131, 119, 4, 16#f4, 16#90, 16#80, 16#80>>,
         <<131, 105, 0:32>>,
         <<131, 70, 16#7ff0000000000000:64>>,
         <<131, 82, 0>>,
         <<131, 117, 0:32>>,
         <<131, 80, 0:32, (zlib:compress(<<>>))/binary>>,
         <<131, 80, 2:32, (zlib:compress(<<97, 1, 0>>))/binary>>,
         <<131, 80, 4:32, (zlib:compress(<<97, 1, 0>>))/binary>>],
    Lines = run_checker([], Cases),
    Failures = [{B, Want, Got} || {B, L} <- lists:zip(Cases, Lines),
                                  Want <- [otp_view(B)], Got <- [parse_ok(L)],
                                  not agrees(Want, Got), not newer_otp(B, Want, Got)],
    report(Failures),
    ?assertEqual([], Failures),
    %% An arity past 255: binary_to_term/1 takes it (and makes a broken fun,
    %% so it is not called here); the checker refuses it.
    BigArity = [<<131, 113, 100, 1:16, "a", 100, 1:16, "b", 98, N:32>>
                || N <- [256, 300, 70000, 16#7fffffff]],
    ?assertEqual([<<"ERR CNB_EMALFORMED">> || _ <- BigArity], run_checker([], BigArity)).

%% ---- random terms ------------------------------------------------------------

n_terms() ->
    case os:getenv("CNB_PROP_TERMS") of
        false -> ?DEFAULT_TERMS;
        S -> list_to_integer(S)
    end.

seed_rand(What) ->
    Seed = case os:getenv("CNB_PROP_SEED") of
               false -> erlang:system_time(microsecond) rem 1000000007;
               S -> list_to_integer(S)
           end,
    io:format(user, "~nterm_prop_tests(~p): seed ~p (CNB_PROP_SEED=~p repeats it)~n",
              [What, Seed, Seed]),
    rand:seed(exsss, {Seed, Seed bxor 16#5bd1e995, 1 + Seed rem 7919}),
    [erase(K) || {{form25, _} = K, _} <- get()],
    erase(atom_pool).

pick(L) -> lists:nth(rand:uniform(length(L)), L).

chance(N) -> rand:uniform(N) =:= 1.

gen(0) -> leaf();
gen(D) ->
    case rand:uniform(12) of
        N when N =< 5 -> leaf();
        6 -> list_to_tuple([gen(D - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)]);
        7 -> [gen(D - 1) || _ <- lists:seq(1, rand:uniform(6))];
        8 -> improper([gen(D - 1) || _ <- lists:seq(1, rand:uniform(4))], leaf());
        9 -> gen_map(D);
        10 -> gen_string();
        11 -> gen_fun(D);
        12 -> case chance(30) of
                  true -> list_to_tuple([leaf() || _ <- lists:seq(1, 250 + rand:uniform(60))]);
                  false -> [[gen(D - 1)], {gen(D - 1)}]
              end
    end.

improper(Elems, Tail) when is_list(Tail) -> Elems ++ Tail;
improper(Elems, Tail) -> lists:foldr(fun(E, Acc) -> [E | Acc] end, Tail, Elems).

leaf() ->
    case rand:uniform(20) of
        1 -> rand:uniform(256) - 1;
        2 -> rand:uniform(1 bsl 33) - (1 bsl 32);
        3 -> gen_big();
        4 -> gen_float();
        5 -> gen_float();
        6 -> gen_atom();
        7 -> gen_atom();
        8 -> rand:bytes(rand:uniform(40) - 1);
        9 -> Bits = rand:uniform(60), <<(rand:uniform(1 bsl Bits) - 1):Bits>>;
        10 -> gen_pid();
        11 -> gen_ref();
        12 -> gen_port();
        13 -> pick([[], {}, #{}, <<>>]);
        14 -> gen_string();
        15 -> gen_export();
        16 -> -rand:uniform(100000);
        17 -> pick(int_edges());
        18 -> pick(float_edges());
        _ -> rand:uniform(1000)
    end.

int_edges() ->
    [0, 255, 256, -1, -255, -256, 2147483647, 2147483648, -2147483648, -2147483649,
     4294967295, 4294967296, (1 bsl 59) - 1, 1 bsl 59, -(1 bsl 59), (1 bsl 63) - 1,
     1 bsl 63, -(1 bsl 63), -(1 bsl 63) - 1, (1 bsl 64) - 1, 1 bsl 64, -(1 bsl 64),
     1 bsl 2039, (1 bsl 2040) - 1, 1 bsl 2040, -(1 bsl 2047), 9007199254740993].

float_edges() ->
    [0.0, neg_zero(), 1.0, -1.0, 0.5, 5.0e-324, -5.0e-324, 2.2250738585072014e-308,
     1.7976931348623157e308, -1.7976931348623157e308, 9007199254740992.0,
     18446744073709551616.0, 1.0e15, 255.0, 0.1, -2147483648.0].

neg_zero() -> binary_to_term(<<131, 70, 128, 0, 0, 0, 0, 0, 0, 0>>).

gen_big() ->
    Bits = 33 + rand:uniform(case chance(20) of true -> 2400; false -> 200 end),
    Mag = rand:uniform(1 bsl Bits),
    case chance(2) of true -> -Mag; false -> Mag end.

gen_float() ->
    case rand:uniform(4) of
        1 -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(600) - 300);
        2 -> float(rand:uniform(1 bsl 60) - (1 bsl 59));
        3 -> rand:uniform() * 1000;
        4 -> random_bits_float()
    end.

random_bits_float() ->
    case rand:bytes(8) of
        <<F:64/float>> -> F;
        _ -> 1.25 %% NaN or infinity: not a term
    end.

gen_atom() ->
    Pool = case get(atom_pool) of
               undefined -> P = atom_pool(), put(atom_pool, P), P;
               P -> P
           end,
    element(rand:uniform(tuple_size(Pool)), Pool).

atom_pool() ->
    Ascii = [list_to_atom([$a + rand:uniform(26) - 1 || _ <- lists:seq(1, rand:uniform(12))])
             || _ <- lists:seq(1, 40)],
    Latin1 = [list_to_atom([160 + rand:uniform(95) || _ <- lists:seq(1, rand:uniform(8))])
              || _ <- lists:seq(1, 20)],
    Uni = [list_to_atom([uni_char() || _ <- lists:seq(1, rand:uniform(8))])
           || _ <- lists:seq(1, 20)],
    Long = [list_to_atom(lists:duplicate(255, $z)), list_to_atom(lists:duplicate(255, 16#e4)),
            list_to_atom(lists:duplicate(200, 16#20ac)), list_to_atom(lists:duplicate(128, $q)),
            list_to_atom([16#10348 || _ <- lists:seq(1, 70)])],
    list_to_tuple(Ascii ++ Latin1 ++ Uni ++ Long ++ ['', true, false, nil, undefined, 'a@b']).

uni_char() ->
    C = pick([rand:uniform(16#7ff - 16#100) + 16#100, rand:uniform(16#d7ff - 16#800) + 16#800,
              rand:uniform(16#fffd - 16#e000) + 16#e000, rand:uniform(16#10ffff - 16#10000) + 16#10000]),
    C.

gen_string() ->
    case rand:uniform(3000) of
        1 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, 65535)];
        2 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, 65536)];
        3 -> lists:duplicate(70000, $x) ++ [300];
        _ -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(20))]
    end.

gen_map(D) ->
    NKeys = case chance(12) of true -> 33 + rand:uniform(30); false -> rand:uniform(6) - 1 end,
    maps:from_list(distinct([{map_key(D), gen(D - 1)} || _ <- lists:seq(1, NKeys)], [])).

%% Drops a key =:= to an earlier one: OTP 25 keeps #Ref<N.7> and #Ref<N.7.0>
%% (=:= but different) both in a large map and writes them in hash order,
%% which the canonical form cannot reproduce.
distinct([], Acc) -> lists:reverse(Acc);
distinct([{K, V} | Rest], Acc) ->
    case lists:any(fun({K2, _}) -> K2 =:= K end, Acc) of
        true -> distinct(Rest, Acc);
        false -> distinct(Rest, [{K, V} | Acc])
    end.

map_key(D) ->
    case rand:uniform(6) of
        1 -> I = rand:uniform(50), pick([I, float(I)]);
        2 -> gen(max(0, D - 2));
        _ -> leaf()
    end.

node_names() -> ['a@h', 'node2@host.example', 'x', 'ñodé@høst', 'ノード@ホスト', ''].

creation() -> pick([0, 1, 2, 3, rand:uniform(1 bsl 32) - 1, 16#ffffffff]).

local_allowed() -> get(foreign_only) =/= true.

gen_pid() ->
    case local_allowed() andalso chance(3) of
        true -> pick([self(), list_to_pid("<0." ++ integer_to_list(rand:uniform(32767)) ++ ".0>"),
                      list_to_pid("<0.1.5>")]);
        false ->
            Node = atom_enc(atom_to_binary(pick(node_names()), utf8)),
            binary_to_term(<<131, 88, Node/binary, (rand:uniform(1 bsl 32) - 1):32,
                             (pick([0, 1, rand:uniform(1 bsl 32) - 1])):32, (creation()):32>>)
    end.

gen_ref() ->
    case local_allowed() andalso chance(3) of
        true -> make_ref();
        false ->
            Node = atom_enc(atom_to_binary(pick(node_names()), utf8)),
            Len = rand:uniform(5),
            Words = << <<(pick([rand:uniform(1 bsl 18) - 1, rand:uniform(1 bsl 32) - 1, 0])):32>>
                       || _ <- lists:seq(1, Len) >>,
            binary_to_term(<<131, 90, Len:16, Node/binary, (creation()):32, Words/binary>>)
    end.

gen_port() ->
    case local_allowed() andalso chance(4) of
        true -> hd(erlang:ports());
        false ->
            Node = atom_enc(atom_to_binary(pick(node_names()), utf8)),
            Id = pick([rand:uniform(1 bsl 28) - 1, rand:uniform(1 bsl 32) - 1,
                       rand:uniform(1 bsl 64) - 1, 16#0fffffff, 16#10000000]),
            binary_to_term(<<131, 120, Node/binary, Id:64, (creation()):32>>)
    end.

gen_export() ->
    M = alt_atom(pick([no_such_mod, 'módulo', lists])),
    F = alt_atom(pick([f, 'ƒ', g])),
    %% make_fun/3 stops at arity 255; binary_to_term/1 does not, but such a
    %% fun is broken (arity 0 on OTP 25 and 29; OTP 27.3's VM crashes when it
    %% encodes one) and the checker refuses it (edge_cases).
    Arity = canonical(pick([0, 1, 2, 255])),
    pick([fun lists:map/2, fun erlang:abs/1, fun ?MODULE:gen/1,
          binary_to_term(<<131, 113, M/binary, F/binary, (strip(Arity))/binary>>)]).

gen_fun(D) ->
    case local_allowed() of
        false -> gen_export();
        true ->
            X = gen(D - 1),
            Y = leaf(),
            pick([fun() -> X end, fun(Z) -> {Z, X, Y} end, fun(_) -> ok end,
                  fun(A, B) -> [A, B | X] end])
    end.

%% Two terms whose order is worth checking: often equal up to a deep point.
gen_pair() ->
    T = gen(3),
    case rand:uniform(5) of
        1 -> {T, gen(3)};
        2 -> {T, T};
        _ -> {T, perturb(T)}
    end.

perturb(T) when is_integer(T) ->
    pick([T + 1, T - 1, float_or(T), T * 2, -T]);
perturb(T) when is_float(T) ->
    pick([T / 2, T + 1.0, -T, trunc_or(T)]);
perturb(T) when is_tuple(T), tuple_size(T) > 0 ->
    I = rand:uniform(tuple_size(T)),
    setelement(I, T, perturb(element(I, T)));
perturb([H | Tl]) ->
    case rand:uniform(4) of
        1 -> [perturb(H) | Tl];
        2 -> [H | perturb(Tl)];
        3 -> [H];
        4 -> [H, H | Tl]
    end;
perturb(M) when is_map(M), map_size(M) > 0 ->
    {K, V} = pick(maps:to_list(M)),
    case rand:uniform(3) of
        1 -> M#{K => perturb(V)};
        2 -> maps:put(perturb(K), V, maps:remove(K, M));
        3 -> maps:remove(K, M)
    end;
perturb(B) when is_bitstring(B), bit_size(B) > 0 ->
    pick([<<B/bitstring, 0:1>>, <<B/bitstring, 1:3>>,
          binary_part_bits(B)]);
perturb(T) ->
    pick([leaf(), T]).

float_or(I) when abs(I) < (1 bsl 1000) -> float(I);
float_or(I) -> I.

trunc_or(F) when abs(F) < 1.0e300 -> trunc(F);
trunc_or(F) -> F.

binary_part_bits(B) ->
    N = bit_size(B) - 1,
    <<P:N/bitstring, _:1>> = B,
    P.

%% Closures over a map with both 0.0 and -0.0 as keys (two keys on 27+, one
%% on 25): 27+ accept the map, the checker refuses it as 25 does, which
%% newer_otp/3 must excuse inside a fun's free variables too (on OTP 29 a
%% random term once hid such a map in a closure and failed the property).
fun_env_pairs() ->
    Zeros = maps:from_list([{0.0, a}, {neg_zero(), b}]
                           ++ [{I, I} || I <- lists:seq(1, 40)]),
    Zero = maps:remove(neg_zero(), Zeros),
    [{fun() -> Zeros end, fun() -> Zeros end}, {fun() -> Zeros end, fun() -> Zero end},
     {[fun(X) -> {X, Zeros} end], [fun(X) -> {X, Zero} end]}].

number_pairs() ->
    Ints = [0, 1, -1, 255, 1 bsl 31, 1 bsl 53, (1 bsl 53) + 1, (1 bsl 63) - 1, 1 bsl 63,
            (1 bsl 64) + 1, 1 bsl 64, 1 bsl 1023, (1 bsl 1024) - 1, 1 bsl 1024],
    Floats = [0.0, neg_zero(), 1.0, 0.5, 9007199254740992.0, 9007199254740994.0,
              9223372036854775808.0, 18446744073709551616.0, 8.98846567431158e307,
              1.7976931348623157e308, 5.0e-324],
    [{S1 * I, S2 * F} || I <- Ints, F <- Floats, S1 <- [1, -1], S2 <- [1.0, -1.0]] ++
        [{I, J} || I <- Ints, J <- Ints] ++ [{F, G} || F <- Floats, G <- Floats].

%% ---- encodings ---------------------------------------------------------------

%% The canonical form is OTP 25's term_to_binary(T, [{minor_version, 2},
%% deterministic]) on every release (core/term.c; the registry's hashes and
%% keys must not change with the release of the node that made them). OTP 26+
%% write every port as V4_PORT_EXT where 25 writes NEW_PORT_EXT for an id of
%% at most 28 bits; on those releases the bytes are put back into 25's form,
%% remembered per term (a property asks for the same term's bytes once per
%% encoding of it; seed_rand/1 forgets them).
canonical(T) ->
    B = term_to_binary(T, [{minor_version, 2}, deterministic]),
    case otp_release() > 25 of
        false -> B;
        true ->
            case get({form25, T}) of
                undefined ->
                    <<131, E/binary>> = B,
                    {Out, <<>>} = form25(E),
                    C = iolist_to_binary([131, Out]),
                    put({form25, T}, C),
                    C;
                C -> C
            end
    end.

otp_release() -> list_to_integer(erlang:system_info(otp_release)).

%% form25(Bytes): {IoList, Rest} for the one term at the head of Bytes (the
%% tags deterministic minor_version 2 output holds), ports rewritten as above.
form25(<<120, R0/binary>>) ->
    {Node, <<Id:64, Cr:32, R/binary>>} = form25(R0),
    case Id =< 16#0fffffff of
        true -> {[89, Node, <<Id:32, Cr:32>>], R};
        false -> {[120, Node, <<Id:64, Cr:32>>], R}
    end;
form25(<<88, R0/binary>>) ->
    {Node, <<Fields:12/binary, R/binary>>} = form25(R0),
    {[88, Node, Fields], R};
form25(<<90, N:16, R0/binary>>) ->
    {Node, R1} = form25(R0),
    <<Fields:(4 + 4 * N)/binary, R/binary>> = R1,
    {[<<90, N:16>>, Node, Fields], R};
form25(<<104, N, R/binary>>) -> form25_seq(N, R, [104, N]);
form25(<<105, N:32, R/binary>>) -> form25_seq(N, R, <<105, N:32>>);
form25(<<108, N:32, R/binary>>) -> form25_seq(N + 1, R, <<108, N:32>>);
form25(<<116, N:32, R/binary>>) -> form25_seq(2 * N, R, <<116, N:32>>);
form25(<<113, R/binary>>) -> form25_seq(3, R, 113);
form25(<<112, _Size:32, Arity, Uniq:16/binary, Index:32, NFree:32, R0/binary>>) ->
    {Rest, R} = form25_seq(4 + NFree, R0, []),
    Body = iolist_to_binary([Arity, Uniq, <<Index:32, NFree:32>>, Rest]),
    {[112, <<(byte_size(Body) + 4):32>>, Body], R};
form25(<<Tag, _/binary>> = B) ->
    Len = case B of
              <<97, _/binary>> -> 2;
              <<98, _/binary>> -> 5;
              <<70, _/binary>> -> 9;
              <<106, _/binary>> -> 1;
              <<119, L, _/binary>> -> 2 + L;
              <<118, L:16, _/binary>> -> 3 + L;
              <<107, L:16, _/binary>> -> 3 + L;
              <<109, L:32, _/binary>> -> 5 + L;
              <<77, L:32, _/binary>> -> 6 + L;
              <<110, L, _/binary>> -> 3 + L;
              <<111, L:32, _/binary>> -> 6 + L;
              _ -> error({form25_unexpected_tag, Tag})
          end,
    <<Term:Len/binary, R/binary>> = B,
    {Term, R}.

form25_seq(0, R, Acc) -> {Acc, R};
form25_seq(N, R0, Acc) ->
    {T, R} = form25(R0),
    form25_seq(N - 1, R, [Acc, T]).

encodings(T) ->
    [term_to_binary(T, O) || O <- [[], [compressed], [{minor_version, 0}],
                                   [{minor_version, 1}], [deterministic], [{compressed, 9}]]] ++
        [<<131, (alt_bin(T))/binary>>, <<131, (alt_bin(T))/binary>>, alt_bin(T),
         compress(alt_bin(T))].

enc_any(T) ->
    case rand:uniform(4) of
        1 -> canonical(T);
        2 -> term_to_binary(T, [{minor_version, 1}]);
        _ -> <<131, (alt_bin(T))/binary>>
    end.

compress(Inner) ->
    Z = zlib:compress(Inner),
    Head = case chance(2) of true -> <<131>>; false -> <<>> end,
    <<Head/binary, 80, (byte_size(Inner)):32, Z/binary>>.

alt_bin(T) -> iolist_to_binary(alt(T)).

%% A random valid encoding of T other than OTP's own (no version byte).
alt(T) ->
    case chance(40) of
        true -> [<<108, 0:32>>, alt1(T)]; %% a LIST_EXT of no elements is its tail
        false -> alt1(T)
    end.

alt1(T) when is_integer(T) -> alt_int(T);
alt1(T) when is_float(T) -> alt_float(T);
alt1(T) when is_atom(T) -> alt_atom(T);
alt1(T) when is_tuple(T) ->
    N = tuple_size(T),
    Head = case N =< 255 andalso chance(2) of
               true -> <<104, N>>;
               false -> <<105, N:32>>
           end,
    [Head | [alt(E) || E <- tuple_to_list(T)]];
alt1(T) when is_list(T) -> alt_list(T);
alt1(T) when is_map(T) ->
    KVs = shuffle(maps:to_list(T)),
    [<<116, (length(KVs)):32>> | [[alt(K), alt(V)] || {K, V} <- KVs]];
alt1(T) when is_binary(T) ->
    N = byte_size(T),
    %% OTP 27+ refuse a BIT_BINARY_EXT of 0 bytes (edge_cases has it).
    case {N, chance(2) andalso (N > 0 orelse otp_release() < 27)} of
        {0, true} -> <<77, 0:32, 0>>;
        {0, false} -> <<109, 0:32>>;
        {_, true} -> <<77, N:32, 8, T/binary>>;
        {_, false} -> <<109, N:32, T/binary>>
    end;
alt1(T) when is_bitstring(T) ->
    Bits = bit_size(T) rem 8,
    Pad = 8 - Bits,
    Data = <<T/bitstring, (rand:uniform(1 bsl Pad) - 1):Pad>>,
    <<77, (byte_size(Data)):32, Bits, Data/binary>>;
alt1(T) when is_pid(T) ->
    <<88, Rest/binary>> = strip(canonical(T)),
    {Node, <<Id:32, Ser:32, Cre:32>>} = split_atom(Rest),
    case Cre =< 3 andalso chance(2) of
        true -> [<<103>>, alt_atom(Node), <<Id:32, Ser:32, Cre:8>>];
        false -> [<<88>>, alt_atom(Node), <<Id:32, Ser:32, Cre:32>>]
    end;
alt1(T) when is_reference(T) ->
    <<90, Len:16, Rest/binary>> = strip(canonical(T)),
    {Node, <<Cre:32, Words/binary>>} = split_atom(Rest),
    Old = Cre =< 3 andalso Len >= 1 andalso binary:first(Words) < 4 andalso
        (binary:decode_unsigned(binary:part(Words, 0, 4)) < (1 bsl 18)),
    case {Old, Len, rand:uniform(3)} of
        {true, 1, 1} -> [<<101>>, alt_atom(Node), Words, <<Cre:8>>];
        {true, _, N} when N =< 2 -> [<<114, Len:16>>, alt_atom(Node), <<Cre:8>>, Words];
        _ -> [<<90, Len:16>>, alt_atom(Node), <<Cre:32>>, Words]
    end;
alt1(T) when is_port(T) ->
    {Node, Id, Cre} = case strip(canonical(T)) of
                          <<89, R/binary>> ->
                              {N, <<I:32, C:32>>} = split_atom(R), {N, I, C};
                          <<120, R/binary>> ->
                              {N, <<I:64, C:32>>} = split_atom(R), {N, I, C}
                      end,
    case rand:uniform(3) of
        1 when Id < (1 bsl 32), Cre =< 3 -> [<<102>>, alt_atom(Node), <<Id:32, Cre:8>>];
        2 when Id < (1 bsl 32) -> [<<89>>, alt_atom(Node), <<Id:32, Cre:32>>];
        _ -> [<<120>>, alt_atom(Node), <<Id:64, Cre:32>>]
    end;
alt1(T) when is_function(T) ->
    case erlang:fun_info(T, type) of
        {type, external} ->
            %% Not fun_info(T, arity): OTP 25 reports arities above 255 modulo 256.
            <<113, R0/binary>> = strip(canonical(T)),
            {M, R1} = split_atom(R0),
            {F, R2} = split_atom(R1),
            [<<113>>, alt_atom(M), alt_atom(F), alt_int(binary_to_term(<<131, R2/binary>>))];
        {type, local} ->
            Info = erlang:fun_info(T),
            Get = fun(K) -> proplists:get_value(K, Info) end,
            Env = Get(env),
            Body = [<<(Get(arity)), (Get(new_uniq))/binary, (Get(new_index)):32,
                      (length(Env)):32>>,
                    alt_atom(Get(module)), alt_int(Get(index)), alt_int(Get(uniq)),
                    alt1(Get(pid)) | [alt(E) || E <- Env]],
            Size = iolist_size(Body) + 4,
            %% OTP ignores the Size field; the canonical form recomputes it.
            [<<112, (pick([Size, Size, 0, 16#ffffffff])):32>> | Body]
    end.

strip(<<131, B/binary>>) -> B.

split_atom(<<119, N, Name:N/binary, Rest/binary>>) -> {binary_to_atom(Name, utf8), Rest};
split_atom(<<118, N:16, Name:N/binary, Rest/binary>>) -> {binary_to_atom(Name, utf8), Rest}.

atom_enc(Name) when byte_size(Name) =< 255 -> <<119, (byte_size(Name)), Name/binary>>;
atom_enc(Name) -> <<118, (byte_size(Name)):16, Name/binary>>.

alt_int(I) ->
    Small = I >= 0 andalso I =< 255,
    Int32 = I >= -(1 bsl 31) andalso I < (1 bsl 31),
    case rand:uniform(4) of
        1 when Small -> <<97, I>>;
        2 when Int32 -> <<98, I:32/signed>>;
        3 -> big_enc(I, rand:uniform(3) - 1);
        _ -> big_enc(I, 0)
    end.

big_enc(I, Pad) ->
    Sign = if I < 0 -> pick([1, 2, 255]); I =:= 0 -> pick([0, 1]); true -> 0 end,
    Mag = binary:encode_unsigned(abs(I), little),
    Digits = <<Mag/binary, 0:(Pad * 8)>>,
    N = byte_size(Digits),
    case N =< 255 andalso chance(4) =:= false of
        true -> <<110, N, Sign, Digits/binary>>;
        false -> <<111, N:32, Sign, Digits/binary>>
    end.

alt_float(F) ->
    case chance(2) of
        true -> <<70, F:64/float>>;
        false ->
            S0 = list_to_binary(float_to_list(F, [{scientific, 20}])),
            S = case chance(4) of
                    true -> binary:replace(S0, <<".">>, <<",">>);
                    false -> S0
                end,
            <<99, S/binary, 0:((31 - byte_size(S)) * 8)>>
    end.

alt_atom(A) ->
    Utf8 = atom_to_binary(A, utf8),
    Chars = atom_to_list(A),
    Latin1 = lists:all(fun(C) -> C =< 255 end, Chars),
    N = byte_size(Utf8),
    Choices = [utf8_big] ++ [utf8_small || N =< 255] ++ [C || Latin1, C <- [latin1, latin1_small]],
    case pick(Choices) of
        utf8_big -> <<118, N:16, Utf8/binary>>;
        utf8_small -> <<119, N, Utf8/binary>>;
        latin1 -> L = list_to_binary(Chars), <<100, (byte_size(L)):16, L/binary>>;
        latin1_small -> L = list_to_binary(Chars), <<115, (byte_size(L)), L/binary>>
    end.

alt_list([]) ->
    pick([<<106>>, <<107, 0:16>>, <<108, 0:32, 106>>]);
alt_list(L) ->
    {Elems, Tail} = split_list(L, []),
    alt_chain(Elems, Tail).

split_list([H | T], Acc) -> split_list(T, [H | Acc]);
split_list(Tail, Acc) -> {lists:reverse(Acc), Tail}.

%% Elements as one or more LIST_EXT/STRING_EXT pieces, each the tail of the last.
alt_chain([], []) -> alt_list([]);
alt_chain([], Tail) -> alt(Tail);
alt_chain(Elems, Tail) ->
    Len = length(Elems),
    IsString = Tail =:= [] andalso Len =< 65535 andalso
        lists:all(fun(E) -> is_integer(E) andalso E >= 0 andalso E =< 255 end, Elems),
    case IsString andalso chance(2) of
        true -> <<107, Len:16, (list_to_binary(Elems))/binary>>;
        false ->
            K = case chance(3) of true -> rand:uniform(Len); false -> Len end,
            {Chunk, Rest} = lists:split(K, Elems),
            [<<108, K:32>>, [alt(E) || E <- Chunk], alt_chain(Rest, Tail)]
    end.

shuffle(L) -> [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

%% ---- corruption ----------------------------------------------------------------

%% Changes one thing after the version byte.
mutate(<<131, B/binary>>) ->
    <<131, (mutate1(B))/binary>>;
mutate(B) ->
    mutate1(B).

mutate1(B) ->
    Size = byte_size(B),
    Pos = rand:uniform(max(1, Size)) - 1,
    case rand:uniform(6) of
        1 -> binary:part(B, 0, Pos);
        2 when Size > 0 ->
            <<Pre:Pos/binary, _, Post/binary>> = B,
            <<Pre/binary, (rand:uniform(256) - 1), Post/binary>>;
        3 when Size > 0 ->
            <<Pre:Pos/binary, _, Post/binary>> = B,
            <<Pre/binary, Post/binary>>;
        4 ->
            <<Pre:Pos/binary, Post/binary>> = B,
            <<Pre/binary, (pick([0, 1, 97, 104, 106, 107, 108, 255, rand:uniform(256) - 1])),
              Post/binary>>;
        5 when Size > 0 ->
            <<Pre:Pos/binary, X, Post/binary>> = B,
            <<Pre/binary, (X bxor (1 bsl (rand:uniform(8) - 1))), Post/binary>>;
        _ -> <<B/binary, (rand:uniform(256) - 1)>>
    end.

%% ---- the checker ---------------------------------------------------------------

checker() ->
    Candidates = [filename:join([R, "build", "tests", "tools", "term_check"]) || R <- roots()],
    case [P || P <- Candidates, filelib:is_regular(P)] of
        [P | _] -> P;
        [] -> error({term_check_not_built, Candidates,
                     "run `make c` (or make build/tests/tools/term_check) first"})
    end.

roots() ->
    Env = case os:getenv("CNB_ROOT") of false -> []; R -> [R] end,
    %% The module is compiled into <root>/build/itest.
    Beam = filename:dirname(filename:absname(code:which(?MODULE))),
    {ok, Cwd} = file:get_cwd(),
    Env ++ [filename:dirname(filename:dirname(Beam)), Cwd].

%% Runs the checker once over all records; returns its output lines.
run_checker(Args, Records) ->
    Port = open_port({spawn_executable, checker()},
                     [{args, Args}, binary, exit_status, use_stdio, {line, 1 bsl 16}]),
    Data = [[<<(byte_size(R)):32>>, R] || R <- Records],
    true = port_command(Port, [Data, <<16#ffffffff:32>>]),
    collect(Port, [], []).

collect(Port, Partial, Lines) ->
    receive
        {Port, {data, {noeol, Chunk}}} -> collect(Port, [Chunk | Partial], Lines);
        {Port, {data, {eol, Chunk}}} ->
            Line = iolist_to_binary(lists:reverse([Chunk | Partial])),
            collect(Port, [], [Line | Lines]);
        {Port, {exit_status, 0}} -> lists:reverse(Lines);
        {Port, {exit_status, S}} -> error({term_check_exit, S})
    after 300000 ->
            error(term_check_timeout)
    end.

report([]) -> ok;
report(Failures) ->
    io:format(user, "~p failures; the first ones:~n", [length(Failures)]),
    [io:format(user, "  ~P~n", [F, 200]) || F <- lists:sublist(Failures, 8)],
    ok.
